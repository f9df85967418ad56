"""Adapters to peer sparse-conv libraries installed on the machine (spconv)."""

from .spconv_peer import SpconvConv, spconv_available, spconv_info, to_spconv_weight

__all__ = ["SpconvConv", "spconv_available", "spconv_info", "to_spconv_weight"]
