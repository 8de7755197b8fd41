"""Stage 3 of ELM (Lehman et al., 2022, §7): terrain-conditioned inventors.

The stage-2 program model, conditioned on a terrain through a terrain embedding network
(TEN) whose output it reads as a soft prompt, is tuned with PPO on the distance its
walkers travel on that terrain.
"""
