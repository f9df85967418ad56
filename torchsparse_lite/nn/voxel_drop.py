"""Dynamic voxel pruning: drop the least important voxels of a tensor, and put them back later.

:class:`VoxelDrop` scores every voxel (the L2 norm of its features, or a tiny
learned head) and keeps the best ``keep`` fraction of each sample. The
survivors form a new :class:`~torchsparse_lite.SparseTensor` with a fresh
kernel-map cache, so every later layer builds its maps (submanifold and
strided) on the survivors only. :class:`VoxelRestore` scatters features
computed on the survivors back onto the full coordinate set (dropped rows are
zero), in the full tensor's own cache, so that a transposed conv after it
finds the down-sampling map that produced the full set.

Selection rule (eval, and the norm scorer in training): per sample ``b`` with
``n_b`` voxels, the ``max(1, round(keep * n_b))`` highest scores survive; ties
go to the lower row index (stable sorts), and survivors keep their row order.

Learned scorer in training: a Gumbel-sigmoid sample keeps voxel ``i`` with
probability ``sigmoid(logit_i)`` (logistic noise added to the logit, kept
when > 0; each sample's best voxel always survives). Survivors' features are
multiplied by the straight-through mask ``hard + soft - soft.detach()``
(exactly 1 in the forward pass; ``soft = sigmoid((logit + noise) / tau)``
carries the task gradient to the head), and the mean keep probability is
kept for a budget loss (:func:`torchsparse_lite.prune.voxels.voxel_budget_loss`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..kmap.cache import same_coords
from ..tensor import SparseTensor

SCORERS: tuple[str, ...] = ("norm", "learned")
"""Per-voxel importance: ``"norm"`` (feature L2 norm, no training) or ``"learned"`` (a Linear(C, 1) head)."""


def check_keep(keep: object, name: str = "keep") -> float:
    """``keep`` as a float in (0, 1]; TypeError / ValueError otherwise."""
    if isinstance(keep, bool) or not isinstance(keep, (int, float)):
        raise TypeError(f"{name} must be a float in (0, 1], got {type(keep).__name__}")
    if not 0.0 < float(keep) <= 1.0:
        raise ValueError(f"{name} must be in (0, 1] (the fraction of voxels kept), got {keep!r}")
    return float(keep)


def top_per_sample(score: torch.Tensor, batch: torch.Tensor, keep: float) -> torch.Tensor:
    """Rows of the ``max(1, round(keep * n_b))`` best scores of every sample, ascending.

    Args:
        score: [N] floating scores (higher = more important).
        batch: [N] integer sample index of every row.
        keep: fraction in (0, 1].

    Returns:
        [K] int64 row indices, sorted (survivors keep their order); ties go to the lower row.
    """
    if score.dim() != 1 or batch.shape != score.shape:
        raise ValueError(f"score and batch must both be [N], got {list(score.shape)} and {list(batch.shape)}")
    if score.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=score.device)
    batch = batch.long()
    order = torch.argsort(score.detach(), descending=True, stable=True)
    order = order[torch.argsort(batch[order], stable=True)]  # grouped by sample, best first
    counts = torch.bincount(batch)
    quota = torch.where(counts > 0, (counts.double() * keep).round().long().clamp(min=1), counts)
    starts = torch.cumsum(counts, 0) - counts
    sample = batch[order]
    rank = torch.arange(order.numel(), device=order.device) - starts[sample]
    return order[rank < quota[sample]].sort().values


class NormScorer(nn.Module):
    """Importance = L2 norm of a voxel's features (no parameters, no training).

    ``forward(feats [N, C]) -> [N]`` (detached: it only ranks voxels).
    """

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return torch.linalg.vector_norm(feats.detach(), dim=1)


class LearnedScorer(nn.Module):
    """Keep logit of every voxel from a ``nn.Linear(channels, 1)`` head (child ``linear``).

    The bias starts at ``logit(keep)`` so the keep probability starts at the
    budget. ``forward(feats [N, C]) -> logits [N]``; ``sigmoid(logit)`` is the keep probability.
    """

    def __init__(self, channels: int, keep: float = 0.5) -> None:
        super().__init__()
        self.linear = nn.Linear(channels, 1)
        p = min(max(check_keep(keep), 1e-4), 1 - 1e-4)
        nn.init.constant_(self.linear.bias, math.log(p / (1 - p)))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.linear(feats).squeeze(1)


@dataclass(frozen=True)
class DropRecord:
    """What :class:`VoxelRestore` needs to undo one drop.

    Attributes:
        full: the tensor before the drop (its coordinates, stride and map cache).
        keep: [K] int64 rows of ``full`` that survived (ascending).
        survivors: [K, 4] the survivors' coordinates (the rows restored features must have).
    """

    full: SparseTensor
    keep: torch.Tensor
    survivors: torch.Tensor


class VoxelRestore(nn.Module):
    """Scatter features of the survivors back onto the full coordinate set of a :class:`DropRecord`.

    ``forward(y [K, C] on the survivors' coordinates, record) -> [N, C]`` on
    ``record.full``'s coordinates and map cache; dropped rows are zero.

    Why zeros: in MinkUNet the restored tensor feeds a k=2, stride-2
    transposed conv, so a dropped voxel gives its children no up-sampled
    signal; those children are then described by the complete finer skip
    features concatenated after the transposed conv, and the submanifold
    3x3x3 residual blocks of that decoder stage mix in the decoder features of
    surviving neighbours — the skip path and the nearest survivors fill the
    hole, learnt end to end, at no extra map or search cost.
    """

    def forward(self, y: SparseTensor, record: DropRecord) -> SparseTensor:
        if not isinstance(y, SparseTensor):
            raise TypeError(f"VoxelRestore expects a SparseTensor, got {type(y).__name__}")
        if not isinstance(record, DropRecord):
            raise TypeError(f"VoxelRestore expects a DropRecord, got {type(record).__name__}")
        if not same_coords(y.coords, record.survivors):
            raise ValueError(
                f"VoxelRestore: y has {len(y)} rows that are not the {record.keep.numel()} survivors of the drop "
                "(same coordinates, same order); restore the output of the layers that ran on the survivors"
            )
        full = record.full
        feats = y.feats.new_zeros(len(full), y.feats.shape[1]).index_add(0, record.keep, y.feats)
        return full.replace(feats)


class VoxelDrop(nn.Module):
    """Keep the ``keep`` most important voxels of every sample (see the module docstring).

    Args:
        channels: feature channels of the input.
        keep: fraction of each sample's voxels kept, in (0, 1] (the budget of the learned head).
        scorer: ``"norm"`` or ``"learned"`` (:data:`SCORERS`).
        tau: Gumbel-sigmoid temperature of the learned head's straight-through mask.

    ``forward(x [N, channels]) -> (survivors [K, channels], DropRecord)``: the
    survivors carry a fresh map cache; pass the record to :attr:`restore`.
    After every forward, :attr:`last_counts` is ``(kept, total)`` and, for the
    learned head, :attr:`last_keep_prob` the mean keep probability (with
    gradient in training).
    """

    def __init__(self, channels: int, keep: float, scorer: str = "norm", tau: float = 1.0) -> None:
        super().__init__()
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be a positive int, got {channels!r}")
        if scorer not in SCORERS:
            raise ValueError(f"scorer must be one of {SCORERS}, got {scorer!r}")
        if not (isinstance(tau, (int, float)) and tau > 0):
            raise ValueError(f"tau must be a positive number, got {tau!r}")
        self.channels, self.keep, self.kind, self.tau = channels, check_keep(keep), scorer, float(tau)
        self.scorer: nn.Module = LearnedScorer(channels, self.keep) if scorer == "learned" else NormScorer()
        self.restore = VoxelRestore()
        self.last_counts: tuple[int, int] | None = None
        self.last_keep_prob: torch.Tensor | None = None

    def config(self) -> dict:
        """Constructor arguments except ``channels`` (what a checkpoint's structure records)."""
        return {"keep": self.keep, "scorer": self.kind, "tau": self.tau}

    def extra_repr(self) -> str:
        return f"{self.channels}, keep={self.keep}, scorer={self.kind!r}, tau={self.tau}"

    def forward(self, x: SparseTensor) -> tuple[SparseTensor, DropRecord]:
        if not isinstance(x, SparseTensor):
            raise TypeError(f"VoxelDrop expects a SparseTensor, got {type(x).__name__}")
        if x.feats.dim() != 2 or x.feats.shape[1] != self.channels:
            raise ValueError(f"x.feats has shape {list(x.feats.shape)}; VoxelDrop({self.channels}) expects "
                             f"[N, {self.channels}]")  # fmt: skip
        score = self.scorer(x.feats)
        batch = x.coords[:, 0]
        if self.kind == "learned" and self.training:
            keep, feats = self._sample(score, batch, x.feats)
        else:
            keep = top_per_sample(score, batch, self.keep)
            feats = x.feats[keep]
        if self.kind == "learned":
            self.last_keep_prob = torch.sigmoid(score).mean() if score.numel() else score.new_zeros(())
        self.last_counts = (int(keep.numel()), len(x))
        coords = x.coords[keep]
        survivors = SparseTensor(feats, coords, x.stride, spatial_range=x.spatial_range, validate=False)
        return survivors, DropRecord(x, keep, coords)

    def _sample(
        self, logits: torch.Tensor, batch: torch.Tensor, feats: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Gumbel-sigmoid keep sample -> (kept rows [K], their features times the straight-through mask)."""
        u = torch.rand_like(logits).clamp(1e-6, 1 - 1e-6)
        noisy = logits + torch.log(u) - torch.log1p(-u)
        hard = noisy.detach() > 0
        hard[top_per_sample(logits, batch, 1e-9)] = True  # every sample keeps its best voxel
        keep = hard.nonzero().squeeze(1)
        soft = torch.sigmoid(noisy[keep] / self.tau)
        mask = 1.0 + soft - soft.detach()
        return keep, feats[keep] * mask[:, None]
