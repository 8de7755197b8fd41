"""jelm: Evolution through Large Models (Lehman et al., 2022, arXiv 2206.08896) on JAX."""

__version__ = "0.1.0"
