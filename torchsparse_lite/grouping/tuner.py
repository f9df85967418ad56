"""Pick ``epsilon`` and ``threshold`` of the adaptive strategy by measuring a few candidates.

The tuner is an object you own (pass it as a layer's ``grouping`` or keep it
next to the model): its cache maps (layer signature, device, executor tag) to
the chosen :class:`GroupingConfig`, so the measurement runs once per kind of
layer. The tag names the executor (``"torch"``, ``"triton"``, ...): the best
grouping of the batched-matmul path is not the best of the fused kernels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch

from ..kmap.geometry import ConvGeometry
from ..kmap.kernel_map import KernelMap
from ..utils.timing import measure
from .config import GroupingConfig
from .plan import plan_groups


@dataclass(frozen=True)
class LayerSignature:
    """What a tuned choice depends on: conv geometry, channels, dtype and size class."""

    geometry: ConvGeometry  # unbounded: the grid size does not change the choice
    cin: int
    cout: int
    dtype: str
    size_class: int  # bit length of the pair count: inputs within a factor of 2 share a choice

    mode = property(lambda self: self.geometry.mode)


def layer_signature(kmap: KernelMap, weight: torch.Tensor) -> LayerSignature:
    """Signature of a conv with map ``kmap`` and weight [K, Cin, Cout]."""
    return LayerSignature(
        replace(kmap.geometry, bound=None),
        int(weight.shape[1]), int(weight.shape[2]), str(weight.dtype).removeprefix("torch."),
        sum(kmap.counts).bit_length(),
    )  # fmt: skip


def _time(run: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median wall time of ``run`` in seconds after one warm-up call (device-synchronised on CUDA)."""
    return measure(run, warmup=1, reps=repeats, device=device).median


class GroupingTuner:
    """Measures adaptive-grouping candidates on a sample and caches the fastest per (signature, device).

    Args:
        epsilons: redundancy tolerances to try.
        threshold_quantiles: thresholds to try, as quantiles of the layer's
            non-empty map sizes (1.0 -> above every map: group everything;
            0.0 -> every map alone).
        repeats: timed runs per candidate (median taken).
    """

    def __init__(
        self,
        epsilons: Sequence[float] = (0.0, 0.15, 0.3, 0.5),
        threshold_quantiles: Sequence[float] = (0.5, 0.9, 1.0),
        repeats: int = 3,
    ) -> None:
        if not epsilons or not threshold_quantiles:
            raise ValueError("epsilons and threshold_quantiles must each hold at least one candidate")
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        self.epsilons = tuple(float(e) for e in epsilons)
        self.threshold_quantiles = tuple(float(q) for q in threshold_quantiles)
        self.repeats = int(repeats)
        self._cache: dict[tuple[LayerSignature, str, str], GroupingConfig] = {}
        self.timings: dict[tuple[LayerSignature, str, str], list[tuple[GroupingConfig, float]]] = {}

    def __len__(self) -> int:
        return len(self._cache)

    def clear(self) -> None:
        self._cache.clear()
        self.timings.clear()

    def cached(self, kmap: KernelMap, weight: torch.Tensor, tag: str = "") -> GroupingConfig | None:
        """The cached choice for this layer on ``weight``'s device and executor ``tag``, or None."""
        return self._cache.get((layer_signature(kmap, weight), str(weight.device), tag))

    def candidates(self, kmap: KernelMap) -> list[GroupingConfig]:
        """Distinct adaptive configs to measure (candidates with identical plans are merged)."""
        sizes = sorted(c for k, c in enumerate(kmap.counts) if c and k != kmap.identity_offset)
        out: list[GroupingConfig] = []
        seen = set()
        for q in self.threshold_quantiles:
            thr = sizes[min(len(sizes) - 1, int(q * len(sizes)))] + (q >= 1.0) if sizes else 0
            for eps in self.epsilons:
                cfg = GroupingConfig("adaptive", epsilon=eps, threshold=int(thr))
                plan = plan_groups(kmap.counts, cfg, kmap.identity_offset, kmap.symmetric)
                if plan.groups not in seen:
                    seen.add(plan.groups)
                    out.append(cfg)
        return out

    def fixed_choice(self, kmap: KernelMap) -> GroupingConfig:
        """The choice made without timing (deterministic mode): the first candidate, a function of the map only."""
        found = self.candidates(kmap)
        return found[0] if found else GroupingConfig("adaptive")

    def choose(
        self,
        feats: torch.Tensor,
        weight: torch.Tensor,
        kmap: KernelMap,
        run: Callable[[GroupingConfig], object],
        tag: str = "",
    ) -> GroupingConfig:
        """Return the cached choice, or time ``run(config)`` for every candidate and cache the fastest.

        Args:
            feats: [n_in, Cin] sample input (only its device is used here).
            weight: [K, Cin, Cout]; kmap: the layer's map on the sample.
            run: executes the conv forward with a given config (no grad needed).
            tag: names the executor ``run`` uses; part of the cache key.
        """
        key = (layer_signature(kmap, weight), str(feats.device), tag)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        results = []
        with torch.no_grad():
            for cfg in self.candidates(kmap):
                results.append((cfg, _time(lambda cfg=cfg: run(cfg), feats.device, self.repeats)))
        best = min(results, key=lambda r: r[1])[0]
        self._cache[key] = best
        self.timings[key] = results
        return best
