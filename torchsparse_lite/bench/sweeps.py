"""Sweeps: padded-FLOP overhead versus epsilon, and cost versus input size with a power-law fit."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..functional.conv import sparse_conv
from ..grouping import GroupingConfig, plan_groups
from ..kmap.kernel_map import KernelMap, build_kernel_map
from ..utils.timing import measure
from .compare import OK, Check, check_close
from .peers import SpconvConv, spconv_available
from .workloads import Workload, tiled

DEFAULT_EPSILONS = tuple(round(0.05 * i, 2) for i in range(0, 20))
DEFAULT_SIZES = (10_000, 30_000, 100_000, 300_000, 1_000_000)


def epsilon_sweep(kmap: KernelMap, cin: int, cout: int, epsilons: Sequence[float] = DEFAULT_EPSILONS) -> dict:
    """Padded-FLOP overhead and launches of the adaptive plan per epsilon (plus fixed/dense/separate).

    Returns:
        ``{"epsilon": [...], "overhead": [...], "launches": [...], "fixed": x, "dense": x, "separate": x}``
        where overhead = padded / real FLOPs - 1.
    """
    def work(cfg: GroupingConfig):
        return plan_groups(kmap.counts, cfg, kmap.identity_offset, kmap.symmetric).work(cin, cout)

    ws = [work(GroupingConfig("adaptive", epsilon=float(e))) for e in epsilons]
    return {
        "epsilon": [float(e) for e in epsilons],
        "overhead": [w.overhead for w in ws],
        "launches": [w.launches for w in ws],
        **{s: work(GroupingConfig(s)).overhead for s in ("separate", "fixed", "dense")},
    }


def power_law(x: Sequence[float], y: Sequence[float]) -> dict:
    """Least-squares fit ``y = a * x**b`` in log-log space; returns ``{"exponent": b, "coef": a, "r2": ...}``."""
    lx, ly = np.log(np.asarray(x, dtype=float)), np.log(np.asarray(y, dtype=float))
    if lx.size < 2:
        raise ValueError("power_law needs at least two points")
    b, la = np.polyfit(lx, ly, 1)
    pred = la + b * lx
    ss_res = float(((ly - pred) ** 2).sum())
    ss_tot = float(((ly - ly.mean()) ** 2).sum()) or 1.0
    return {"exponent": float(b), "coef": float(math.exp(la)), "r2": 1.0 - ss_res / ss_tot}


def scaling_sweep(base: Workload, sizes: Sequence[int] = DEFAULT_SIZES, *, channels: int = 16, warmup: int = 1,
                  reps: int = 3, peers: bool = True, device: str = "cpu", layout: str = "batch",
                  large_from: int = 100_000) -> dict:
    """Map building and one submanifold 3x3x3 conv versus input size (tiles of ``base``).

    Sizes below ``base`` are random subsets of it; larger ones repeat it
    (``layout``: ``"batch"`` = a batch of copies, ``"space"`` = copies side
    by side, see :func:`~torchsparse_lite.bench.workloads.tiled`). Each size
    checks spconv (when installed and asked for) against our conv before
    timing it. Fits ``time = a * entries**b`` per series over all sizes, and
    over the sizes >= ``large_from`` voxels (key suffix ``_large``), where
    fixed per-call costs no longer dominate.

    Returns:
        ``{"base": name, "sizes": [...], "points": [per-size dicts], "fits": {series: fit}}``.
    """
    points = []
    ks = (3, 3, 3)
    use_peer = peers and spconv_available() and torch.device(device).type == "cpu"
    for n in tqdm(list(sizes), desc="scaling", leave=False):
        w = tiled(base, int(n), layout)
        coords = w.coords.to(device)
        km = build_kernel_map(coords, ks, builder="hash")
        g = torch.Generator().manual_seed(int(n))
        feats = torch.randn(w.n, channels, generator=g).to(device)
        weight = (torch.randn(27, channels, channels, generator=g) / math.sqrt(27 * channels)).to(device)
        kmd = km
        row = {"voxels": w.n, "map_entries": int(km.in_idx.numel())}
        for builder in ("hash", "sort"):
            row[f"map_{builder}"] = measure(lambda c=coords, b=builder: build_kernel_map(c, ks, builder=b),
                                            warmup=warmup, reps=reps, device=device).as_dict()
        with torch.no_grad():
            ours = sparse_conv(feats, weight, kmd, backend="torch")
            conv = lambda f=feats, wt=weight, k=kmd: sparse_conv(f, wt, k, backend="torch")  # noqa: E731
            row["conv_fwd"] = measure(conv, warmup=warmup, reps=reps, device=device).as_dict()
        if use_peer:
            peer = SpconvConv(weight, ks, (1, 1, 1), "submanifold", coords)
            x = peer.prepare(feats)
            out, oc = peer.forward(x)
            chk: Check = check_close(out, ours, out_coords=oc, ref_coords=coords)
            row["spconv_check"] = chk.as_dict()
            if chk.status == OK:
                row["spconv_map"] = measure(peer.build_map, warmup=warmup, reps=reps).as_dict()
                row["spconv_fwd"] = measure(lambda p=peer, xx=x: p.forward(xx), warmup=warmup, reps=reps).as_dict()
        points.append(row)
    fits = {}
    for series in ("map_hash", "map_sort", "conv_fwd", "spconv_map", "spconv_fwd"):
        pts = [(p["map_entries"], p[series]["median"]) for p in points if series in p]
        if len(pts) >= 2:
            fits[series] = power_law([e for e, _ in pts], [t for _, t in pts])
            fits[series + "_vs_voxels"] = power_law(
                [p["voxels"] for p in points if series in p], [t for _, t in pts])
        big = [(p["map_entries"], p[series]["median"]) for p in points if series in p and p["voxels"] >= large_from]
        if len(big) >= 2:
            fits[series + "_large"] = power_law([e for e, _ in big], [t for _, t in big])
    return {"base": base.name, "channels": channels, "layout": layout, "large_from": large_from,
            "sizes": [int(s) for s in sizes], "points": points, "fits": fits}
