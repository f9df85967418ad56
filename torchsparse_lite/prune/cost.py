"""What a channel search pays: MACs as an exact function of the kept channels per group, and measured latency.

Channel pruning never changes coordinates, so every layer keeps its kernel map (or its rows): a layer's MACs
(:mod:`torchsparse_lite.models.stats` conventions) are ``pairs x Cin x Cout`` with ``pairs`` fixed, and ``Cin`` /
``Cout`` are its fixed channels plus the kept channels of the groups at its input / output slots.
:class:`ChannelCost` counts the layers once on the unpruned model and then prices any assignment of kept
channels without a forward pass (equal to :func:`~.report.model_summary`'s count of the pruned model).
:func:`cpu_latency` is the measured cost NetAdapt, AMC and AutoSlim share: the median CPU time of the model on
one fixed scan with its kernel maps built in every call (:func:`~.report.compare_latency`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from .. import nn as tsnn
from ..models.stats import count_macs_by_layer
from .graph import DependencyGraph
from .report import compare_latency, fresh_input

Kept = dict[int, int]
"""Group id -> channels kept (groups left out keep all)."""
BUDGET_KINDS = ("macs", "latency")
"""What a search budget is a fraction of: the MACs, or the measured CPU time of :func:`cpu_latency`."""


@dataclass(frozen=True)
class LayerCost:
    """One conv / linear: ``pairs * (fixed_in + sum kept[ins]) * (fixed_out + sum kept[outs])`` MACs."""

    name: str
    pairs: int
    fixed_in: int
    ins: tuple[int, ...]
    fixed_out: int
    outs: tuple[int, ...]


def layer_widths(module: nn.Module) -> tuple[int, int]:
    """``(in, out)`` channels of a ``Conv3d`` / ``Linear``."""
    if isinstance(module, tsnn.Conv3d):
        return module.in_channels, module.out_channels
    return module.in_features, module.out_features


class ChannelCost:
    """MACs of ``model`` on ``x`` as a function of the channels kept per group of ``graph``.

    Args:
        model: the unpruned network the graph was traced on.
        graph: its dependency graph.
        x: the input the MACs are counted on (SparseTensor).
    """

    def __init__(self, model: nn.Module, graph: DependencyGraph, x: object) -> None:
        self.sizes = {g.gid: g.size for g in graph.groups}
        ins: dict[str, list[int]] = {}
        outs: dict[str, list[int]] = {}
        for g in graph.groups:
            for s in g.consumers:
                ins.setdefault(s.name, []).append(g.gid)
            for s in g.producers:
                outs.setdefault(s.name, []).append(g.gid)
        self.layers: list[LayerCost] = []
        for name, macs in count_macs_by_layer(model, fresh_input(x)).items():
            cin, cout = layer_widths(model.get_submodule(name))
            gi, go = tuple(ins.get(name, ())), tuple(outs.get(name, ()))
            self.layers.append(LayerCost(name, macs // max(cin * cout, 1), cin - sum(self.sizes[g] for g in gi), gi,
                                         cout - sum(self.sizes[g] for g in go), go))  # fmt: skip
        self.base = self.total({})

    def layer_macs(self, kept: Kept) -> list[int]:
        """MACs of every layer (order of :attr:`layers`) with ``kept`` channels."""
        k = {**self.sizes, **kept}
        return [c.pairs * (c.fixed_in + sum(k[g] for g in c.ins)) * (c.fixed_out + sum(k[g] for g in c.outs))
                for c in self.layers]  # fmt: skip

    def total(self, kept: Kept) -> int:
        """MACs of the whole network with ``kept`` channels."""
        return sum(self.layer_macs(kept))

    def group_macs(self, gid: int) -> int:
        """MACs (unpruned) of the layers that read or write group ``gid``."""
        full = self.layer_macs({})
        return sum(m for c, m in zip(self.layers, full) if gid in c.ins or gid in c.outs)


def cpu_latency(x: object, repeats: int = 3) -> Callable[[nn.Module], float]:
    """``model -> median CPU ms`` of ``model(x)``, maps built in every call (NetAdapt's, AMC's and AutoSlim's cost)."""

    def latency(model: nn.Module) -> float:
        return compare_latency({"m": model}, x, repeats)["m"]["median_cpu_ms"]

    return latency
