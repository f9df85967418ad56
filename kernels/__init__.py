"""Triton kernels for torchsparse_lite (installed as ``torchsparse_lite.kernels``)."""
