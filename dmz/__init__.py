"""DMZ: a diffusion autoencoder with binary latents (arXiv 2506.00136), as a benchmarking and ablation harness."""

__version__ = "0.1.0"
