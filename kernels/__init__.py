"""Triton kernel bodies (``@triton.jit`` functions only; launchers live in densescale.ops).

Installed as ``densescale.kernels``; importing a module here requires triton.
"""
