"""The GPU's fast paths: hand-written CUDA kernels (sources.py), launched through ``backend.raw_kernel``."""
