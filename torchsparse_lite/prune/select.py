"""Choose which channels to remove from importance scores: per layer (local) or ranked across layers (global)."""

from __future__ import annotations

import math

import torch

from .graph import DependencyGraph
from .importance import Scores

NORMALIZERS = ("mean", "max", "l2", "none")


def _normalise(s: torch.Tensor, how: str) -> torch.Tensor:
    s = s.double()
    if how == "none":
        return s
    denom = {"mean": s.abs().mean(), "max": s.abs().max(), "l2": s.norm()}[how]
    return s / denom if float(denom) > 0 else s


def group_ratio(graph: DependencyGraph, gid: int, ratio: float | dict, default: float = 0.0) -> float:
    """The ratio of group ``gid``: ``ratio`` itself when a float, else the dict's entry for the group's id,
    its name or one of its producers' names, else ``ratio["default"]``, else ``default``."""
    if not isinstance(ratio, dict):
        return float(ratio)
    g = graph.group(gid)
    for key in [gid, g.name] + [s.name for s in g.producers]:
        if key in ratio:
            return float(ratio[key])
    return float(ratio.get("default", default))


def _check_ratio(r: float, what: str) -> None:
    if not 0.0 <= r < 1.0:
        raise ValueError(f"{what} must be in [0, 1), got {r!r}")


def _n_remove(size: int, ratio: float, round_to: int, min_keep: int) -> int:
    keep = max(min_keep, size - math.floor(ratio * size + 1e-9))
    if round_to > 1:
        keep = min(size, math.ceil(keep / round_to) * round_to)
    return max(0, size - keep)


def select_channels(
    scores: Scores,
    graph: DependencyGraph,
    ratio: float | dict = 0.5,
    *,
    mode: str = "global",
    normalize: str = "mean",
    max_ratio: float = 0.9,
    round_to: int = 1,
    min_keep: int = 1,
) -> dict[int, torch.Tensor]:
    """Indices to remove per group id.

    Args:
        scores: ``{gid: [size]}`` from an :class:`~.importance.Importance` (higher = keep);
            groups without scores are never pruned.
        graph: the dependency graph the scores refer to.
        ratio: fraction of channels to remove. ``mode="local"``: per group, a float or a
            dict keyed by group id / producer module name (``"default"`` for the rest).
            ``mode="global"``: a float, the fraction of all scored channels.
        mode: ``"local"`` (each group loses its own ratio of lowest scores) or
            ``"global"`` (scores normalised per group, ranked across groups).
        normalize: per-group normalisation for global ranking: mean, max, l2 or none.
        max_ratio: global mode never removes more than this fraction of one group.
        round_to: keep a multiple of this many channels per group (e.g. 8 for tensor cores).
        min_keep: channels every group keeps at least.

    Returns:
        ``{gid: LongTensor of channel indices}`` (only groups losing channels).
    """
    if mode not in ("local", "global"):
        raise ValueError(f"mode must be 'local' or 'global', got {mode!r}")
    if normalize not in NORMALIZERS:
        raise ValueError(f"normalize must be one of {NORMALIZERS}, got {normalize!r}")
    if round_to < 1 or min_keep < 1:
        raise ValueError(f"round_to and min_keep must be >= 1, got {round_to}, {min_keep}")
    known = {g.gid: g for g in graph.groups}
    for gid, s in scores.items():
        if gid not in known or s.shape != (known[gid].size,):
            raise ValueError(f"scores[{gid}] does not match a group of this graph (stale scores?)")
    if mode == "local":
        return _select_local(scores, graph, ratio, round_to, min_keep)
    if isinstance(ratio, dict):
        raise TypeError("global mode takes one float ratio; use mode='local' for a per-layer dict")
    _check_ratio(float(ratio), "ratio")
    _check_ratio(float(max_ratio), "max_ratio")
    return _select_global(scores, graph, float(ratio), normalize, max_ratio, round_to, min_keep)


def _select_local(
    scores: Scores, graph: DependencyGraph, ratio: float | dict, round_to: int, min_keep: int
) -> dict[int, torch.Tensor]:
    """Each group loses its own ratio of its lowest scores."""
    out = {}
    for gid, s in scores.items():
        g = graph.group(gid)
        r = group_ratio(graph, gid, ratio, 0.0)
        _check_ratio(r, f"ratio for group {g.name}")
        n = _n_remove(g.size, r, round_to, min_keep)
        if n:
            out[gid] = torch.argsort(s.double(), stable=True)[:n]
    return out


def _select_global(
    scores: Scores,
    graph: DependencyGraph,
    ratio: float,
    normalize: str,
    max_ratio: float,
    round_to: int,
    min_keep: int,
) -> dict[int, torch.Tensor]:
    """The lowest normalised scores across all groups, ``max_ratio`` of a group at most."""
    sizes = {gid: graph.group(gid).size for gid in scores}
    budget = math.floor(ratio * sum(sizes.values()) + 1e-9)
    flat = [(float(v), gid, i) for gid, s in scores.items() for i, v in enumerate(_normalise(s, normalize).tolist())]
    flat.sort()
    caps = {gid: _n_remove(sizes[gid], max_ratio, 1, min_keep) for gid in scores}
    chosen: dict[int, list[int]] = {}
    taken = 0
    for _, gid, i in flat:
        if taken >= budget:
            break
        if len(chosen.get(gid, [])) < caps[gid]:
            chosen.setdefault(gid, []).append(i)
            taken += 1
    if round_to > 1:  # give back channels so each group keeps a multiple of round_to
        for gid, idx in chosen.items():
            n = _n_remove(sizes[gid], len(idx) / sizes[gid], round_to, min_keep)
            chosen[gid] = idx[:n]
    return {gid: torch.tensor(sorted(idx), dtype=torch.long) for gid, idx in chosen.items() if idx}
