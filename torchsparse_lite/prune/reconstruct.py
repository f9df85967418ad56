"""Least-squares reconstruction of the layers that lost input channels (ThiNet; He et al. 2017, channel pruning).

For each named layer, in the given (forward) order, the kept weights ``W`` ``[K * Cin', Cout]`` are refit so the
pruned network's layer output matches the original network's on sampled output rows:
``min_W ||P W - (Y - b)||^2 + lam ||W||^2`` with ``P`` the pruned network's input patches ``[S, K * Cin']``
(:func:`~.regression.patches`) and ``Y`` the original layer's output. The inputs are taken from the pruned
network *after* the layers before it were refit, so each layer also corrects the error accumulated upstream.
``lam = ridge * trace(P'P) / (K * Cin')`` keeps the solve well posed with fewer rows than unknowns; ``ridge`` is
chosen per layer among candidates by 2-fold validation on the sampled rows (alternate rows), and a layer whose
current weights predict the held-out fold better than every fit is left as it is (no overfitted refit).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .regression import feats_of, forward_args, layer_weight, output_rows, patches, sample_rows, set_layer_weight

Batch = tuple[object, object]
RIDGES = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


class _ReachedError(Exception):
    """Raised by a pre-hook to stop the forward pass once the layer's input is captured."""


def _seed(seed: int, batch: int, layer: int) -> int:
    return seed * 1_000_003 + batch * 10_007 + layer


def _targets(
    original: nn.Module, names: Sequence[str], batches: Sequence[Batch], samples: int, seed: int, kept_out: dict
) -> list:
    """Per batch, ``{name: (rows [S], original output minus bias [S, Cout'])}`` in one pass over ``original``
    (``Cout'``: the output channels ``kept_out[name]`` that the pruned layer still has, all without an entry)."""
    out: list[dict[str, tuple[torch.Tensor, torch.Tensor]]] = []

    def make_hook(name: str, layer: int):
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            rows = sample_rows(output_rows(output), samples, _seed(seed, len(out) - 1, layer))
            y = feats_of(output)
            y = y[rows.to(y.device)]
            bias = getattr(module, "bias", None)
            y = (y - bias if bias is not None else y).detach().double().cpu()
            out[-1][name] = (rows, y[:, kept_out[name]] if name in kept_out else y)

        return hook

    hooks = [original.get_submodule(n).register_forward_hook(make_hook(n, i)) for i, n in enumerate(names)]
    try:
        with torch.no_grad():
            for inputs, _ in batches:
                out.append({})
                original(*forward_args(inputs))
    finally:
        for h in hooks:
            h.remove()
    return out


def _input_at(model: nn.Module, name: str, inputs: object) -> object:
    """The input of layer ``name`` when ``model`` runs on ``inputs`` (the rest of the forward is skipped)."""
    box: list[object] = []

    def hook(module: nn.Module, args: tuple) -> None:
        box.append(args[0])
        raise _ReachedError

    handle = model.get_submodule(name).register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            model(*forward_args(inputs))
    except _ReachedError:
        pass
    finally:
        handle.remove()
    if not box:
        raise ValueError(f"layer {name!r} is not called in the forward pass")
    return box[0]


def _normal_equations(pruned: nn.Module, name: str, batches: Sequence[Batch], targets: list) -> list[tuple]:
    """Two folds (alternate sampled rows) of ``(P'P [D, D], P'Y [D, Cout], Y'Y)`` for layer ``name`` of ``pruned``."""
    module = pruned.get_submodule(name)
    folds: list[list] = [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    for (inputs, _), tgt in zip(batches, targets):
        rows, y = tgt[name]
        p = patches(module, _input_at(pruned, name, inputs), rows).double().cpu().reshape(len(rows), -1)
        for f, acc in enumerate(folds):
            pf, yf = p[f::2], y[f::2]
            acc[0], acc[1], acc[2] = acc[0] + pf.t() @ pf, acc[1] + pf.t() @ yf, acc[2] + float((yf * yf).sum())
    return [tuple(f) for f in folds]


def _error(eq: tuple, w: torch.Tensor) -> float:
    """``||P W - Y||^2`` from the normal equations ``eq = (P'P, P'Y, Y'Y)``."""
    a, b, yy = eq
    return float((w * (a @ w)).sum() - 2 * (w * b).sum() + yy) if torch.is_tensor(a) else yy


def _solve(eq: tuple, ridge: float) -> torch.Tensor:
    """``(P'P + lam I)^-1 P'Y`` with ``lam = ridge * mean(diag(P'P))``."""
    a, b, _ = eq
    lam = ridge * float(a.diagonal().mean())
    return torch.linalg.solve(a + max(lam, 1e-12) * torch.eye(len(a), dtype=a.dtype), b)


def _add(x: tuple, y: tuple) -> tuple:
    return tuple(u + v for u, v in zip(x, y))


def _choose_ridge(folds: list[tuple], w_old: torch.Tensor, ridges: Sequence[float]) -> float | None:
    """The ridge whose fit on one fold predicts the other best (both ways), or None when the current weights do."""
    if not all(torch.is_tensor(f[0]) for f in folds):
        return None  # a fold without samples
    best, best_err = None, _error(folds[0], w_old) + _error(folds[1], w_old)
    for r in ridges:
        err = _error(folds[1], _solve(folds[0], r)) + _error(folds[0], _solve(folds[1], r))
        if err < best_err:
            best, best_err = r, err
    return best


def reconstruct_consumers(
    original: nn.Module,
    pruned: nn.Module,
    names: Sequence[str],
    batches: Sequence[Batch],
    samples: int = 1024,
    ridges: Sequence[float] = RIDGES,
    seed: int = 0,
    kept_out: dict[str, torch.Tensor] | None = None,
) -> dict[str, dict[str, float | None]]:
    """Refit layers ``names`` of ``pruned`` (in place, in that order) to ``original``'s outputs; see the module doc.

    Args:
        original: the unpruned network (same layer names and output coordinates).
        pruned: the network after channel surgery (modified in place).
        names: ``Conv3d`` / ``Linear`` layers to refit, in forward order (those whose input channels shrank).
        batches: ``(input, target)`` pairs (targets unused); output rows sampled per layer and batch: ``samples``.
        ridges: candidate relative ridges ``lam`` (see the module doc), chosen per layer by 2-fold validation.
        kept_out: layer name -> the original output channels the pruned layer kept (``PruneResult.kept[name]
            ["out"]``) for layers that also lost outputs.

    Returns:
        ``{name: {"error_before", "error_after", "ridge"}}``: squared output errors on the samples relative to
        ``||Y - b||^2``, and the chosen ridge (None: the layer is left as it was).
    """
    if samples < 1 or not ridges or min(ridges) < 0:
        raise ValueError(f"samples must be >= 1 and ridges non-empty and >= 0, got {samples!r}, {ridges!r}")
    batches = list(batches)
    was = (original.training, pruned.training)
    original.eval(), pruned.eval()
    report = {}
    try:
        targets = _targets(original, names, batches, samples, seed, kept_out or {})
        for name in names:
            report[name] = _refit(pruned.get_submodule(name), _normal_equations(pruned, name, batches, targets), ridges)
    finally:
        original.train(was[0])
        pruned.train(was[1])
    return report


def _refit(module: nn.Module, folds: list[tuple], ridges: Sequence[float]) -> dict[str, float | None]:
    """Refit one layer from its two folds of normal equations (in place); its report row."""
    shape = layer_weight(module).shape
    w_old = layer_weight(module).detach().double().reshape(-1, shape[-1]).cpu()
    eq = _add(*folds)
    scale = max(eq[2], 1e-30)
    ridge = _choose_ridge(folds, w_old, ridges)
    before = _error(eq, w_old)
    if ridge is None:
        return {"error_before": before / scale, "error_after": before / scale, "ridge": None}
    w_new = _solve(eq, ridge)
    set_layer_weight(module, w_new.reshape(shape))
    return {"error_before": before / scale, "error_after": _error(eq, w_new) / scale, "ridge": ridge}
