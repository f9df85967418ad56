"""A plain-autograd sparse conv used as the gradient reference for timed paths."""

from __future__ import annotations

import torch

from ..kmap.kernel_map import KernelMap


def autograd_conv(feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
    """``out[o] += feats[i] @ weight[k]`` for every pair, differentiated by autograd.

    Args:
        feats: [n_in, Cin]; weight: [K, Cin, Cout]; kmap: the map.

    Returns:
        [n_out, Cout]. Slow and memory-hungry on purpose: no custom backward.
    """
    out = feats.new_zeros((kmap.n_out, weight.shape[2]))
    for k, (s, e) in enumerate(kmap.bounds):
        if e > s:
            out = out.index_add(0, kmap.out_idx[s:e], feats.index_select(0, kmap.in_idx[s:e]) @ weight[k])
    return out
