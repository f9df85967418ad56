"""Record which channels flow where during one forward pass.

The tracer runs the model once on an example input with

* forward hooks on *leaf* layers it knows how to prune or pass through
  (``Conv3d``, ``nn.Linear``, batch norms, activations, pooling), and
* a :class:`~torch.overrides.TorchFunctionMode` that sees every torch op run
  *between* those layers (residual ``+``, ``torch.cat`` of U-Net skips,
  ``index_add_`` of a devoxelisation, ...).

Every feature tensor gets a *layout*: a tuple of :class:`Segment` s, each a
run of channels from one *channel space*. A conv or linear output opens a new
space; element-wise layers keep the layout; a residual add unions the spaces of
its operands; a channel concatenation joins the layouts. Spaces that touch the
model input or output, an excluded layer, or an op the tracer does not
understand are marked *fixed* (never pruned). The result is a :class:`Trace`
that :mod:`.graph` turns into prunable channel groups.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .. import nn as tsnn
from ..tensor import SparseTensor


@dataclass(frozen=True)
class Segment:
    """``length`` consecutive channels of channel space ``space``."""

    space: int
    length: int


Layout = tuple[Segment, ...]

_BINARY = {
    "add", "sub", "mul", "div", "true_divide", "maximum", "minimum",
    "__add__", "__radd__", "__iadd__", "__sub__", "__rsub__", "__isub__",
    "__mul__", "__rmul__", "__imul__", "__truediv__", "__rtruediv__", "__itruediv__",
    "add_", "sub_", "mul_", "div_",
}  # fmt: skip
_UNARY = {
    "relu", "relu_", "leaky_relu", "leaky_relu_", "silu", "sigmoid", "tanh", "gelu", "elu", "hardtanh",
    "dropout", "contiguous", "clone", "to", "float", "half", "double", "bfloat16", "detach", "neg",
    "__neg__", "clamp", "clamp_min", "clamp_", "clamp_min_", "softplus", "type_as", "requires_grad_",
    "abs", "square", "sqrt", "exp",
}  # fmt: skip
_SCATTER = {"index_add", "index_add_", "scatter_add", "scatter_add_", "scatter_reduce", "scatter_reduce_"}
_CAT = {"cat", "concat", "concatenate"}
_IGNORED = {"__get__", "dim", "size", "numel", "__len__", "isfinite", "all", "any", "equal", "new_zeros",
            "new_full", "new_empty", "new_ones", "zeros_like", "empty_like", "register_hook", "backward"}  # fmt: skip

CONV_TYPES: tuple[type, ...] = (tsnn.Conv3d,)
LINEAR_TYPES: tuple[type, ...] = (nn.Linear,)
NORM_TYPES: tuple[type, ...] = (nn.BatchNorm1d,)
RELU_TYPES: tuple[type, ...] = (nn.ReLU, nn.ReLU6)
ACT_TYPES: tuple[type, ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.GELU, nn.ELU, nn.Hardswish, nn.Dropout,
    nn.Identity,
)  # fmt: skip
POOL_TYPES: tuple[type, ...] = (tsnn.MaxPool3d, tsnn.GlobalAvgPool, tsnn.GlobalMaxPool)
FIXED_TYPES: tuple[type, ...] = (nn.GroupNorm, nn.LayerNorm, tsnn.ToDense)


def leaf_kind(module: nn.Module) -> str | None:
    """Role of a module in the trace, or None when its internals are traced instead."""
    for kind, types in (
        ("conv", CONV_TYPES),
        ("linear", LINEAR_TYPES),
        ("norm", NORM_TYPES),
        ("relu", RELU_TYPES),
        ("act", ACT_TYPES),
        ("pool", POOL_TYPES),
        ("fixed", FIXED_TYPES),
    ):
        if isinstance(module, types):
            return kind
    return None


@dataclass
class LeafCall:
    """One call of a leaf layer: its name, role and channel layouts."""

    name: str
    kind: str
    in_layout: Layout
    out_layout: Layout


@dataclass
class Trace:
    """Channel spaces (union-find), their fixed flags and the leaf calls."""

    parent: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    fixed: dict[int, str] = field(default_factory=dict)
    calls: list[LeafCall] = field(default_factory=list)

    # ------------------------------------------------------------ spaces
    def new_space(self, size: int, fixed: str | None = None) -> Layout:
        sid = len(self.parent)
        self.parent.append(sid)
        self.sizes.append(int(size))
        if fixed:
            self.fixed[sid] = fixed
        return (Segment(sid, int(size)),)

    def find(self, s: int) -> int:
        while self.parent[s] != s:
            self.parent[s] = self.parent[self.parent[s]]
            s = self.parent[s]
        return s

    def union(self, a: int, b: int, why: str = "channel sizes differ") -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.sizes[ra] != self.sizes[rb]:
            self.fix([ra, rb], why)
        self.parent[rb] = ra
        for r in (rb,):
            if r in self.fixed:
                self.fixed.setdefault(ra, self.fixed[r])

    def fix(self, spaces: Iterable[int], reason: str) -> None:
        for s in spaces:
            self.fixed.setdefault(self.find(s), reason)

    def fix_layout(self, layout: Layout, reason: str) -> None:
        self.fix((seg.space for seg in layout), reason)

    def is_fixed(self, s: int) -> bool:
        return self.find(s) in self.fixed

    def union_layouts(self, a: Layout, b: Layout, where: str) -> bool:
        """Tie ``a`` and ``b`` channel by channel; False (and both fixed) when their segments differ."""
        if [s.length for s in a] != [s.length for s in b]:
            self.fix_layout(a, f"mismatched layouts at {where}")
            self.fix_layout(b, f"mismatched layouts at {where}")
            return False
        for sa, sb in zip(a, b):
            self.union(sa.space, sb.space)
        return True

    def root_layout(self, layout: Layout) -> Layout:
        return tuple(Segment(self.find(s.space), s.length) for s in layout)


def _width(t: torch.Tensor) -> int:
    return int(t.shape[-1]) if t.dim() else 1


class _Tracer(TorchFunctionMode):
    """Torch-function mode + module hooks building a :class:`Trace`."""

    def __init__(self, model: nn.Module, ignore: tuple[str, ...]) -> None:
        super().__init__()
        self.trace = Trace()
        self.layouts: dict[int, Layout] = {}
        self.alive: list[torch.Tensor] = []  # keep traced tensors alive so ids stay unique
        self.depth = 0
        self.ignore = ignore
        self.module_out: dict[str, Layout] = {}
        self.handles = []
        for name, mod in model.named_modules():
            kind = leaf_kind(mod)
            if kind is None:
                continue
            self.handles.append(mod.register_forward_pre_hook(self._pre_hook(name, kind), with_kwargs=True))
            self.handles.append(mod.register_forward_hook(self._post_hook(name, kind)))
        self.pending: dict[str, list[Layout]] = {}

    # ------------------------------------------------------------ tensors
    def register(self, t: torch.Tensor, layout: Layout) -> None:
        self.layouts[id(t)] = layout
        self.alive.append(t)

    def layout_of(self, t: torch.Tensor, reason: str = "untraced tensor") -> Layout:
        lay = self.layouts.get(id(t))
        if lay is None:
            lay = self.trace.new_space(_width(t), fixed=reason)
            self.register(t, lay)
        return lay

    # ------------------------------------------------------------ hooks
    def _pre_hook(self, name: str, kind: str):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            first = args[0] if args else next(iter(kwargs.values()), None)
            feats = _feats(first)
            if self.depth == 0:
                lay = self.layout_of(feats) if feats is not None else ()
                if feats is not None and feats.dim() != 2 and kind != "fixed":
                    self.trace.fix_layout(lay, f"{name} got a {feats.dim()}-D tensor; only [N, C] is handled")
                self.pending.setdefault(name, []).append(lay)
            self.depth += 1

        return hook

    def _post_hook(self, name: str, kind: str):
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            self.depth -= 1
            if self.depth:
                return
            in_lay = self.pending[name].pop()
            out = _feats(output)
            if out is None:
                return
            tr = self.trace
            if kind in ("conv", "linear"):
                width = int(module.out_channels if kind == "conv" else module.out_features)
                reason = "excluded layer" if _matches(name, self.ignore) else None
                out_lay = tr.new_space(width, fixed=reason)
                if name in self.module_out:  # shared module: every call has the same output channels
                    tr.union_layouts(self.module_out[name], out_lay, name)
                self.module_out.setdefault(name, out_lay)
            elif kind == "fixed":
                tr.fix_layout(in_lay, f"channel-mixing layer {name}")
                out_lay = tr.new_space(_width(out), fixed=f"output of {name}")
            else:
                out_lay = in_lay
                if _width(out) != sum(s.length for s in in_lay):
                    tr.fix_layout(in_lay, f"{name} changed the channel count")
                    out_lay = tr.new_space(_width(out), fixed=f"output of {name}")
            self.register(out, out_lay)
            tr.calls.append(LeafCall(name, kind, in_lay, out_lay))

        return hook

    # ------------------------------------------------------------ torch ops
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.depth == 0:
            self._record(getattr(func, "__name__", str(func)), args, kwargs, out)
        return out

    def _record(self, name: str, args: tuple, kwargs: dict, out: object) -> None:
        traced = [t for t in _tensors((args, kwargs)) if id(t) in self.layouts]
        if not traced or name in _IGNORED:
            return
        tr = self.trace
        if name == "__setitem__":  # writing into some channels only ties them to nothing we can slice
            key = args[1]
            if isinstance(key, tuple) and len(key) > 1 and not _full_slice(key[1]) and id(args[0]) in self.layouts:
                tr.fix_layout(self.layouts[id(args[0])], "channel-indexed assignment")
            return
        if isinstance(out, (tuple, list)):
            for t in traced:
                tr.fix_layout(self.layouts[id(t)], f"op {name} returned several tensors")
            for o in _tensors(out):
                if o.is_floating_point():
                    self.layout_of(o, f"output of {name}")
            return
        if not isinstance(out, torch.Tensor) or not out.is_floating_point():
            return
        lay = self._op_layout(name, args, kwargs, out, traced)
        if lay is None:
            for t in traced:
                tr.fix_layout(self.layouts[id(t)], f"unhandled op {name}")
            if id(out) not in self.layouts:
                self.register(out, tr.new_space(_width(out), fixed=f"output of unhandled op {name}"))
            return
        if id(out) in self.layouts and self.layouts[id(out)] is not lay:
            tr.union_layouts(self.layouts[id(out)], lay, name)
        else:
            self.register(out, lay)

    def _op_layout(self, name: str, args: tuple, kwargs: dict, out: torch.Tensor, traced: list) -> Layout | None:
        tr = self.trace
        first = traced[0]
        if name in _CAT:
            tensors = list(args[0])
            dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
            if out.dim() != 2:
                return None
            lays = [self.layout_of(t) for t in tensors]
            if dim in (1, -1):
                return tuple(seg for lay in lays for seg in lay)
            for lay in lays[1:]:
                tr.union_layouts(lays[0], lay, name)
            return lays[0]
        if out.dim() != 2 or first.dim() != 2:
            return None
        if name in _UNARY:
            return self.layouts[id(first)] if out.shape[1] == first.shape[1] else None
        if name in _BINARY:
            lay = None
            for a in list(args) + list(kwargs.values()):
                if not isinstance(a, torch.Tensor):
                    continue
                if id(a) not in self.layouts:
                    if a.numel() != 1:
                        return None  # a per-channel constant the tracer cannot slice
                    continue
                if a.shape != out.shape:
                    return None
                if lay is None:
                    lay = self.layouts[id(a)]
                elif not tr.union_layouts(lay, self.layouts[id(a)], name):
                    return None
            return lay
        if name == "index_select":
            dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
            return self.layouts[id(first)] if dim == 0 and first is args[0] else None
        if name == "__getitem__":
            key = args[1]
            rows_only = isinstance(key, (torch.Tensor, slice, list)) or (
                isinstance(key, tuple) and len(key) == 2 and _full_slice(key[1])
            )
            return self.layouts[id(first)] if rows_only and out.shape[1] == first.shape[1] else None
        if name in _SCATTER:
            dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
            src = kwargs.get("source", kwargs.get("src", args[3] if len(args) > 3 else None))
            if dim != 0 or not isinstance(src, torch.Tensor) or id(src) not in self.layouts:
                return None
            lay = self.layouts[id(src)]
            if id(args[0]) in self.layouts and not tr.union_layouts(lay, self.layouts[id(args[0])], name):
                return None
            return lay
        return None


def _full_slice(k: object) -> bool:
    return isinstance(k, slice) and k == slice(None)


def _feats(x: object) -> torch.Tensor | None:
    if isinstance(x, SparseTensor):
        return x.feats
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        return x
    return None


def _tensors(obj: object) -> list[torch.Tensor]:
    """Every tensor (and sparse tensor's features) inside nested tuples/lists/dicts."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, SparseTensor):
        return [obj.feats]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _tensors(v)]
    if isinstance(obj, (tuple, list)):
        return [t for v in obj for t in _tensors(v)]
    return []


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in patterns)


def trace_channels(model: nn.Module, example_input: object, ignore: Iterable[str] = ()) -> Trace:
    """Run ``model(example_input)`` once and record its channel flow.

    Args:
        model: the network (any mix of ``torchsparse_lite.nn`` layers and torch ops).
        example_input: a :class:`SparseTensor` (or tuple of arguments); only its
            structure matters, a small point cloud is enough.
        ignore: module names (or name prefixes) whose output channels must not be
            pruned, e.g. the stem conv.

    Returns:
        The :class:`Trace`; input and output spaces are fixed.
    """
    ignore = tuple(ignore)
    names = {n for n, _ in model.named_modules()}
    for p in ignore:
        if p not in names:
            raise ValueError(f"ignore: no module named {p!r}; choose from model.named_modules()")
    tracer = _Tracer(model, ignore)
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    for t in _tensors(args):
        if t.is_floating_point():
            tracer.register(t, tracer.trace.new_space(_width(t), fixed="model input"))
    try:
        with torch.no_grad(), tracer:
            out = model(*args)
    finally:
        for h in tracer.handles:
            h.remove()
    for t in _tensors(out):
        if id(t) in tracer.layouts:
            tracer.trace.fix_layout(tracer.layouts[id(t)], "model output")
    return tracer.trace
