"""Run machinery: run directories, checkpoints, metrics and plots (DESIGN.md "Runs")."""
