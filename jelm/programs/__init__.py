"""Programs as genotypes, for any domain (ELM, arXiv 2206.08896v1, §3): how programs are
specified, run (sandboxed or trusted), diffed and edited."""
