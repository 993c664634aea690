"""Triton kernels of the decode step (installed as ``sglang_dflash.kernels``).

Each kernel has a plain-PyTorch reference in the package (``sglang_dflash.block``,
``sglang_dflash.acceptance``, ``sglang_dflash.sampling``); tests compare them on CPU under
TRITON_INTERPRET=1 and on the GPU.
"""
