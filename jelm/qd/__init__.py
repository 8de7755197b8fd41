"""Quality-diversity search: the MAP-Elites archive (QDax), the ledger and the ELM loop."""
