"""Parameters of a grouping strategy as a small frozen dataclass."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import GROUPING_STRATEGIES as STRATEGIES


@dataclass(frozen=True)
class GroupingConfig:
    """How the kernel offsets of a sparse conv are grouped into matmuls.

    Attributes:
        strategy: ``"separate"`` (one matmul per offset), ``"fixed"``
            (``group_size`` consecutive offsets per padded batched matmul),
            ``"adaptive"`` (TorchSparse-style, see :func:`plan_groups`) or
            ``"dense"`` (all offsets padded into one batched matmul).
        group_size: offsets per group of the ``"fixed"`` strategy.
        epsilon: ``"adaptive"`` only; a group grows while its redundancy
            ``1 - real_pairs / padded_pairs`` stays <= epsilon.
        threshold: ``"adaptive"`` only; maps with at least this many pairs run
            alone, smaller ones are grouped.
        fold: ``"adaptive"`` only; for a symmetric map (submanifold conv, odd
            kernel) offsets ``k`` and ``K-1-k`` always share a group (their
            maps have equal size, inputs and outputs swapped, so pairing them
            adds no padding).
    """

    strategy: str = "separate"
    group_size: int = 4
    epsilon: float = 0.3
    threshold: int = 32768
    fold: bool = True

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"grouping strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if not isinstance(self.group_size, int) or self.group_size < 1:
            raise ValueError(f"group_size must be a positive int, got {self.group_size!r}")
        if not 0.0 <= float(self.epsilon) < 1.0:
            raise ValueError(f"epsilon is a redundancy fraction in [0, 1), got {self.epsilon!r}")
        if not isinstance(self.threshold, int) or self.threshold < 0:
            raise ValueError(f"threshold must be a non-negative int (map pairs), got {self.threshold!r}")


def as_grouping(value: object) -> GroupingConfig:
    """Turn a strategy name (or a config) into a :class:`GroupingConfig`.

    Raises:
        TypeError: neither a string nor a GroupingConfig.
        ValueError: unknown strategy name.
    """
    if isinstance(value, GroupingConfig):
        return value
    if isinstance(value, str):
        return GroupingConfig(strategy=value)
    raise TypeError(
        f"grouping must be a strategy name {STRATEGIES}, a GroupingConfig or a GroupingTuner, "
        f"got {type(value).__name__}"
    )
