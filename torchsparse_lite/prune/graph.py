"""Channel groups: the sets of weight slices that must be removed together.

A :class:`ChannelGroup` is one root channel space of the :class:`~.trace.Trace`
that is not fixed. Removing channel ``j`` of a group removes

* output column ``j`` of every *producer* (conv / linear writing the space;
  both convs feeding a residual add are producers of one group),
* entry ``offset + j`` of every *norm* whose input layout holds the space at
  ``offset`` (the BN after a concatenation holds several groups),
* input row ``offset + j`` of every *consumer* (conv / linear reading the
  space, at the slice the concatenation put it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from torch import nn

from .trace import Layout, Trace, trace_channels


@dataclass(frozen=True)
class Slot:
    """Module ``name`` holds the group's channels at ``offset`` (+0 .. size-1)."""

    name: str
    offset: int


@dataclass
class ChannelGroup:
    """Coupled channels of one space.

    Attributes:
        gid: root space id (stable for one trace).
        size: number of channels.
        producers: output slots of convs/linears writing the space.
        norms: slots of batch norms over the space.
        consumers: input slots of convs/linears reading the space.
        relus: slots of ReLU layers applied to the space (for APoZ).
    """

    gid: int
    size: int
    producers: list[Slot] = field(default_factory=list)
    norms: list[Slot] = field(default_factory=list)
    consumers: list[Slot] = field(default_factory=list)
    relus: list[Slot] = field(default_factory=list)

    @property
    def name(self) -> str:
        """A readable name: the first producer's module name."""
        return self.producers[0].name if self.producers else f"space{self.gid}"


@dataclass
class DependencyGraph:
    """Prunable channel groups of a model plus the fixed spaces and why."""

    groups: list[ChannelGroup]
    fixed: dict[str, str]
    trace: Trace

    def group(self, name_or_gid: str | int) -> ChannelGroup:
        """Find a group by id or by the name of any of its producers."""
        for g in self.groups:
            if g.gid == name_or_gid or any(p.name == name_or_gid for p in g.producers):
                return g
        raise KeyError(f"no prunable group {name_or_gid!r}; known: {[g.name for g in self.groups]}")

    @property
    def total_channels(self) -> int:
        return sum(g.size for g in self.groups)


def _slots(trace: Trace, layout: Layout, name: str, out: dict[int, list[Slot]]) -> None:
    off = 0
    for seg in layout:
        root = trace.find(seg.space)
        slot = Slot(name, off)
        if slot not in out.setdefault(root, []):
            out[root].append(slot)
        off += seg.length


def build_dependency_graph(model: nn.Module, example_input: object, ignore: Iterable[str] = ()) -> DependencyGraph:
    """Trace ``model`` on ``example_input`` and group its prunable channels.

    Args:
        model: the network.
        example_input: a small input of the right kind (e.g. a SparseTensor).
        ignore: module names (or prefixes) whose output channels stay (stem, head).

    Returns:
        A :class:`DependencyGraph`; groups are ordered by first appearance.
    """
    trace = trace_channels(model, example_input, ignore)
    producers: dict[int, list[Slot]] = {}
    norms: dict[int, list[Slot]] = {}
    consumers: dict[int, list[Slot]] = {}
    relus: dict[int, list[Slot]] = {}
    order: list[int] = []
    for call in trace.calls:
        if call.kind in ("conv", "linear"):
            _slots(trace, call.in_layout, call.name, consumers)
            _slots(trace, call.out_layout, call.name, producers)
            order.append(trace.find(call.out_layout[0].space))
        elif call.kind == "norm":
            _slots(trace, call.in_layout, call.name, norms)
        elif call.kind == "relu":
            _slots(trace, call.in_layout, call.name, relus)
    groups = []
    seen: set[int] = set()
    for root in order:
        if root in seen or trace.is_fixed(root):
            continue
        seen.add(root)
        groups.append(
            ChannelGroup(
                root,
                trace.sizes[root],
                producers.get(root, []),
                norms.get(root, []),
                consumers.get(root, []),
                relus.get(root, []),
            )
        )
    fixed = {}
    for space, reason in trace.fixed.items():
        root = trace.find(space)
        if root in producers:
            for slot in producers[root]:
                fixed[slot.name] = reason
    return DependencyGraph(groups, fixed, trace)
