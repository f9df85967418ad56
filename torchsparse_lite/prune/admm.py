"""ADMM channel pruning (Zhang et al. 2018, "A Systematic DNN Weight Pruning Framework using ADMM"), on channel groups.

Pruning is the constrained problem ``min_W loss(W) s.t. W in S``. ``S`` holds the networks in which all but
``k = total - round(ratio * total)`` channels of the :class:`~.graph.ChannelGroup` s are zero, a channel being
zero when every *producer-side* slice it owns is (:func:`~.group_lasso.channel_slices` without the consumers:
its producers' output slices and biases, its batch norms' gamma and beta). Such a channel carries exactly zero
after its batch norms, residual adds and ReLUs, whatever its consumers' input rows hold, so the surgery can
remove it without changing the network. With ``Z`` a copy of the constrained entries and the scaled dual ``U``,
ADMM alternates

* W-step: ``admm_every`` steps on ``loss(W) + rho / 2 * ||W - Z + U||^2``, each an Adam step on the loss and
  then the proximal step of the quadratic at step size ``lr`` (``W <- (W + lr rho (Z - U)) / (1 + lr rho)``;
  a forward-backward splitting: Adam alone moves a weight by about ``lr`` a step, whatever ``rho``),
* Z-step: ``Z = proj_S(W + U)``, the Euclidean projection,
* U-step: ``U = U + W - Z``,

and ``rho`` grows by ``rho_growth`` at every Z-step (``U`` rescaled by ``rho_old / rho_new``, the scaled dual of
Boyd et al. 2011, sec. 3.4.1). The primal residual ``||W - Z||`` goes to zero as training moves ``W`` into ``S``.

The projection is exact: producer-side slices of different channels are disjoint, so for ``V = W + U`` the
distance to a candidate ``Z`` is ``sum_{j removed} ||V_j||^2`` and the nearest point keeps the ``k`` channels
of largest ``||V_j||`` verbatim and zeroes the others. The selection is global over the groups; each group keeps
its own largest channel (the surgery needs one), and forcing those in first and then the largest of the rest
is still the nearest point of that set.

With ``nm = (n, m)`` the set also asks every conv / linear weight to be N:M sparse along its input channels
(:func:`~.masks.nm_mask`), counted over the input channels that stay, so the hard-pruned network is N:M sparse
in its pruned layout. The Z-step then chooses the channels as above and, for that choice, keeps the ``n``
largest of every ``m`` kept inputs verbatim (the nearest point for the chosen channels: removing input
channels re-forms the runs, so the joint choice does not separate and is not searched).

Hard pruning (:func:`hard_prune`) sets ``W = proj_S(W)``; :func:`~.surgery.prune_groups` then removes the zero
channels, and the smaller network equals the projected one.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch
from torch import nn

from .graph import ChannelGroup, DependencyGraph
from .group_lasso import Slice, channel_slices, channel_squares, scale_slice_
from .masks import is_nm_sparse, nm_mask, prunable_weights
from .regression import forward_args

Values = dict[str, torch.Tensor]
"""``{parameter name: tensor of its shape}``: weights, a projection, a dual variable or a constraint mask."""


def admm_groups(model: nn.Module, graph: DependencyGraph) -> list[ChannelGroup]:
    """The groups the producer side can zero: with producers, every batch norm affine (the others stay)."""
    return [g for g in graph.groups
            if g.producers and all(getattr(model.get_submodule(s.name), "affine", False) for s in g.norms)]  # fmt: skip


def _on(model: nn.Module, groups: list[ChannelGroup], values: Values) -> dict[int, list[Slice]]:
    """``{gid: producer-side slices}`` of ``groups``, on the tensors of ``values`` instead of the parameters."""
    names = {id(p): n for n, p in model.named_parameters()}
    return {g.gid: [(values[names[id(p)]], dim, off) for p, dim, off in channel_slices(model, g, consumers=False)]
            for g in groups}  # fmt: skip


def constraint_mask(model: nn.Module, graph: DependencyGraph, nm: tuple[int, int] | None = None) -> Values:
    """Boolean ``{name: mask}`` of the entries ``S`` constrains: producer-side slices, with ``nm`` all weights."""
    params = dict(model.named_parameters())
    mask = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in params.items()}
    groups = admm_groups(model, graph)
    for g, slices in zip(groups, _on(model, groups, mask).values()):
        for t, dim, off in slices:
            t.narrow(dim, off, g.size).fill_(True)
    if nm is not None:
        for name, _ in prunable_weights(model):
            mask[name + ".weight"].fill_(True)
    return {n: m for n, m in mask.items() if bool(m.any())}


def top_channels(norms: dict[int, torch.Tensor], keep: int) -> dict[int, torch.Tensor]:
    """``{gid: indices removed}``: all but the ``keep`` largest ``norms`` ``[size]`` over all groups.

    Each group's largest channel is kept first (``keep`` is at least the number of groups).
    """
    forced = [n.clone().index_fill_(0, n.argmax(), float("inf")) for n in norms.values()]
    order = torch.argsort(torch.cat(forced).cpu(), descending=True, stable=True)
    removed = torch.zeros(len(order), dtype=torch.bool)
    removed[order[max(keep, len(norms)) :]] = True
    out, pos = {}, 0
    for gid, n in norms.items():
        idx = removed[pos : pos + len(n)].nonzero().flatten()
        pos += len(n)
        if len(idx):
            out[gid] = idx
    return out


def _inputs(mod: nn.Module) -> int:
    """Input channels of a Conv3d / Linear."""
    return mod.in_channels if hasattr(mod, "in_channels") else mod.in_features


def nm_holds(model: nn.Module, nm: tuple[int, int]) -> bool:
    """Whether every conv / linear weight with at least ``m`` input channels is N:M sparse along them."""
    return all(is_nm_sparse(mod, *nm) for _, mod in prunable_weights(model) if _inputs(mod) >= nm[1])


def _kept_inputs(model: nn.Module, graph: DependencyGraph, name: str, remove: dict[int, torch.Tensor]) -> torch.Tensor:
    """Input channel indices of layer ``name`` that stay after removing ``remove``."""
    keep = torch.ones(_inputs(model.get_submodule(name)), dtype=torch.bool)
    for g in graph.groups:
        for s in g.consumers:
            if s.name == name and g.gid in remove:
                keep[s.offset + remove[g.gid]] = False
    return keep.nonzero().flatten()


def admm_project(model: nn.Module, graph: DependencyGraph, values: Values, ratio: float,
                 nm: tuple[int, int] | None = None) -> tuple[Values, dict[int, torch.Tensor]]:  # fmt: skip
    """``proj_S(values)`` (see the module doc) and the channels it zeroes.

    Args:
        values: ``V`` on (at least) the entries of :func:`constraint_mask` (not modified).
        ratio: fraction of the channels of :func:`admm_groups` removed; nm: ``(n, m)`` or None.

    Returns:
        ``Z`` (new tensors, ``V`` outside the constrained entries) and ``{gid: removed indices}``.
    """
    z = {k: v.detach().clone() for k, v in values.items()}
    groups = admm_groups(model, graph)
    slices = _on(model, groups, z)
    total = sum(g.size for g in groups)
    norms = {g.gid: channel_squares(slices[g.gid], g.size) for g in groups}
    remove = top_channels(norms, total - round(ratio * total))
    for g in groups:
        if g.gid in remove:
            scale = torch.ones(g.size).index_fill_(0, remove[g.gid], 0.0)
            for t, dim, off in slices[g.gid]:
                scale_slice_(t, dim, off, scale)
    for name, mod in prunable_weights(model) if nm is not None else ():
        rows = _kept_inputs(model, graph, name, remove).to(z[name + ".weight"].device)
        if len(rows) >= nm[1]:  # as apply_nm_sparsity: layers with fewer inputs than m stay dense
            w = z[name + ".weight"]  # Conv3d [K, Cin, Cout] / Linear [out, in]: inputs on dim 1
            sub = w.index_select(1, rows)
            w[:, rows] = sub * nm_mask(mod, *nm, weight=sub)
    return z, remove


def _residual(a: Values, b: Values, mask: Values) -> float:
    """``||a - b||`` over the masked entries."""
    return float(sum(((a[k] - b[k]) * mask[k]).pow(2).sum() for k in mask) ** 0.5)


def _prox_step(params: dict[str, nn.Parameter], z: Values, u: Values, mask: Values, tau: float) -> None:
    """The proximal step of ``rho / 2 * ||W - Z + U||^2`` at step size ``lr`` (``tau = lr * rho``), in place.

    ``W <- (W + tau * (Z - U)) / (1 + tau)`` on the constrained entries: the exact minimiser of
    ``||W' - W||^2 / (2 lr) + rho / 2 * ||W' - Z + U||^2``.
    """
    with torch.no_grad():
        for k, m in mask.items():
            p = params[k]
            p.copy_(torch.where(m, (p + tau * (z[k] - u[k])) / (1 + tau), p))


def hard_prune(model: nn.Module, graph: DependencyGraph, ratio: float,
               nm: tuple[int, int] | None = None) -> dict[int, torch.Tensor]:  # fmt: skip
    """Set the weights to ``proj_S(W)`` (in place); returns the zeroed channels, for the surgery."""
    params = dict(model.named_parameters())
    z, remove = admm_project(model, graph, {k: params[k] for k in constraint_mask(model, graph, nm)}, ratio, nm)
    with torch.no_grad():
        for k, v in z.items():
            params[k].copy_(v)
    return remove


def train_admm(
    model: nn.Module,
    graph: DependencyGraph,
    batches: Sequence[tuple[object, object]],
    loss_fn: Callable[[object, object], torch.Tensor],
    ratio: float,
    rho: float = 10.0,
    steps: int = 100,
    lr: float = 0.005,
    admm_every: int = 10,
    rho_growth: float = 1.3,
    nm: tuple[int, int] | None = None,
) -> list[dict[str, float]]:
    """ADMM training of ``model`` (in place) toward ``S`` at ``ratio`` (and ``nm``), ``steps`` steps over ``batches``.

    Every step is an Adam step (``lr``) on ``loss_fn`` and the proximal step of ``rho / 2 * ||W - Z + U||^2``;
    every ``admm_every`` steps ``Z`` and ``U`` are updated and ``rho`` is multiplied by ``rho_growth``.

    Returns:
        Per Z-step ``{"step", "loss", "rho", "primal_residual", "dual_residual"}``: the task loss of the last
        W-step, the ``rho`` used, ``||W - Z||`` and ``rho * ||Z - Z_old||`` over the constrained entries.
    """
    if not 0 <= ratio < 1 or not rho > 0 or rho_growth < 1 or steps < 0 or admm_every < 1:
        raise ValueError(f"need 0 <= ratio < 1, rho > 0, rho_growth >= 1, steps >= 0, admm_every >= 1; got {ratio!r}, "
                         f"{rho!r}, {rho_growth!r}, {steps!r}, {admm_every!r}")  # fmt: skip
    params = dict(model.named_parameters())
    mask = constraint_mask(model, graph, nm)
    z, _ = admm_project(model, graph, {k: params[k] for k in mask}, ratio, nm)
    u = {k: torch.zeros_like(v) for k, v in z.items()}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    history = []
    model.train()
    for step, (inputs, target) in enumerate(itertools.islice(itertools.cycle(batches), steps), 1):
        task = loss_fn(model(*forward_args(inputs)), target)
        opt.zero_grad(set_to_none=True)
        task.backward()
        opt.step()
        _prox_step(params, z, u, mask, lr * rho)
        if step % admm_every:
            continue
        w = {k: params[k].detach() for k in mask}
        z_old, (z, _) = z, admm_project(model, graph, {k: w[k] + u[k] for k in mask}, ratio, nm)
        u = {k: (u[k] + w[k] - z[k]) * mask[k] for k in mask}
        history.append({"step": step, "loss": float(task.detach()), "rho": rho,
                        "primal_residual": _residual(w, z, mask),
                        "dual_residual": rho * _residual(z, z_old, mask)})  # fmt: skip
        u = {k: v / rho_growth for k, v in u.items()}
        rho *= rho_growth
    model.eval()
    return history
