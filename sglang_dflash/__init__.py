"""DFlash block-diffusion speculative decoding for SGLang 0.5.17."""

__version__ = "0.1.0"
