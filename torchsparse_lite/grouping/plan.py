"""Grouping plans: which kernel offsets share one (padded) matmul.

A :class:`GroupPlan` is computed from the per-offset map sizes alone, so it
is backend-agnostic: the PyTorch executor runs each group as one ``bmm`` over
padded gathers, the Triton path runs each group as one fused launch. The
centre tap of a submanifold conv (``identity``) needs no gather and always
runs as its own plain matmul.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import GroupingConfig


@dataclass(frozen=True)
class Group:
    """Offsets run together, each padded to ``rows`` (the group's longest map)."""

    offsets: tuple[int, ...]
    rows: int


@dataclass(frozen=True)
class WorkReport:
    """Work one execution did.

    Attributes:
        real_flops: ``2 * pairs * Cin * Cout`` (the arithmetic the conv needs).
        padded_flops: arithmetic actually issued, padding included.
        launches: GEMM launches (gathers and scatters of the PyTorch path are
            not counted; the Triton kernels fuse them).
    """

    real_flops: int
    padded_flops: int
    launches: int

    @property
    def overhead(self) -> float:
        """Padded FLOPs over real FLOPs minus one (0.0 = no padding)."""
        return self.padded_flops / self.real_flops - 1.0 if self.real_flops else 0.0


@dataclass(frozen=True)
class GroupPlan:
    """The groups of one conv.

    Attributes:
        strategy: the strategy that made the plan.
        counts: pairs per offset (the plan's input).
        groups: the gathered groups, in execution order.
        identity: the offset run as a plain matmul without gather, or None.
        folded: True when groups pair offset ``k`` with ``K-1-k`` (executors
            may read the second one as the first one's map swapped).
    """

    strategy: str
    counts: tuple[int, ...]
    groups: tuple[Group, ...]
    identity: int | None
    folded: bool = False

    @property
    def real_pairs(self) -> int:
        return sum(self.counts)

    @property
    def padded_pairs(self) -> int:
        extra = self.counts[self.identity] if self.identity is not None else 0
        return sum(len(g.offsets) * g.rows for g in self.groups) + extra

    @property
    def launches(self) -> int:
        return sum(1 for g in self.groups if g.rows) + (self.identity is not None)

    def work(self, cin: int, cout: int) -> WorkReport:
        """Work of the batched-matmul execution of this plan for ``cin`` -> ``cout`` channels."""
        per_pair = 2 * cin * cout
        return WorkReport(self.real_pairs * per_pair, self.padded_pairs * per_pair, self.launches)


def _group(offsets: list[int], counts: tuple[int, ...]) -> Group:
    return Group(tuple(offsets), max((counts[k] for k in offsets), default=0))


def _adaptive(units: list[tuple[int, ...]], counts: tuple[int, ...], cfg: GroupingConfig) -> list[Group]:
    """Sort units by map size (largest first); big maps alone, small ones grown into groups within epsilon."""
    units = sorted(units, key=lambda u: (-counts[u[0]], u))
    groups: list[Group] = []
    current: list[int] = []
    real = 0
    for unit in units:
        size = counts[unit[0]]
        if size == 0:
            continue
        if size >= cfg.threshold:
            groups.append(_group(list(unit), counts))
            continue
        if current:
            longest = counts[current[0]]  # sorted: the first member is the longest
            new_real = real + size * len(unit)
            if 1.0 - new_real / (longest * (len(current) + len(unit))) <= cfg.epsilon:
                current.extend(unit)
                real = new_real
                continue
            groups.append(_group(current, counts))
        current, real = list(unit), size * len(unit)
    if current:
        groups.append(_group(current, counts))
    return groups


def plan_groups(
    counts: tuple[int, ...] | list[int],
    config: GroupingConfig,
    identity_offset: int | None = None,
    symmetric: bool = False,
) -> GroupPlan:
    """Group the offsets of a conv with ``counts[k]`` pairs for offset ``k``.

    * separate: one group per non-empty offset;
    * fixed: ``group_size`` consecutive offsets per group (empty ones padded too);
    * adaptive: offsets sorted by map size; maps with >= ``threshold`` pairs
      alone; smaller maps form groups that grow while the padding keeps the
      redundancy within ``epsilon``; with ``fold`` and a symmetric map,
      offsets ``k`` and ``K-1-k`` move as one unit;
    * dense: every offset in one group padded to the longest map.

    The identity offset (if any, and non-empty) is left out of the groups.
    """
    counts = tuple(int(c) for c in counts)
    if any(c < 0 for c in counts):
        raise ValueError(f"counts must be non-negative, got {counts}")
    identity = identity_offset if identity_offset is not None and counts[identity_offset] > 0 else None
    rest = [k for k in range(len(counts)) if k != identity_offset]
    folded = False
    if config.strategy == "separate":
        groups = [_group([k], counts) for k in rest if counts[k]]
    elif config.strategy == "fixed":
        step = config.group_size
        groups = [_group(rest[i : i + step], counts) for i in range(0, len(rest), step)]
        groups = [g for g in groups if g.rows]
    elif config.strategy == "dense":
        groups = [g for g in [_group(rest, counts)] if g.rows]
    else:
        volume = len(counts)
        folded = symmetric and config.fold and volume % 2 == 1
        units: list[tuple[int, ...]] = (
            [(k, volume - 1 - k) for k in range(volume // 2)] if folded else [(k,) for k in rest]
        )
        if folded and any(counts[a] != counts[b] for a, b in units):
            raise ValueError("symmetric=True but the counts of offsets k and K-1-k differ; pass symmetric=False")
        groups = _adaptive(units, counts, config)
    return GroupPlan(config.strategy, counts, tuple(groups), identity, folded)
