"""Hutchinson estimate of a Hessian diagonal from first-order gradients only.

``diag(H) = E_v[v * (H v)]`` for Rademacher ``v`` (entries +-1; Bekas et al. 2007, PyHessian 2020): the
variance of one sample at entry ``i`` is ``sum_{j != i} H_ij^2``, so the mean over ``samples`` probes converges
as ``1 / sqrt(samples)``. ``H v`` is the central difference of gradients along ``v``,
``(g(w + h v) - g(w - h v)) / (2 h)`` (error ``O(h^2)``), not a double backward: the sparse conv's backward
is not itself differentiable, so autograd's Hessian-vector product would be wrong through it.

:class:`HessianOBD` is the criterion on it (``"hessian"``), beside :class:`~.importance.Fisher`'s empirical Fisher.

The step is one scalar for the whole direction, ``h = eps * ||w|| / ||v||`` (``||w||`` over all the parameters;
``eps`` alone when they are zero), so it moves the parameters by ``eps`` of their norm; they are restored bit for
bit after each probe. A ReLU network is piecewise smooth: a difference across a kink sees a jump of the gradient
(``jump / h``, however small ``h``), which the Hessian leaves out. Given the ``model``, :class:`FrozenActivations`
records every ReLU's on/off pattern at the unperturbed weights and replays it in the perturbed passes, so the
differences see one smooth piece and match the Hessian autograd would give (ReLU'' = 0) to ``O(h^2)``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
from torch import nn

from .importance import (
    Importance,
    LossFn,
    Scores,
    obd_scores,
    producer_modules,
    register_criterion,
    weight_and_bias,
)

GradFn = Callable[[], list[torch.Tensor]]
"""Returns the gradient of a fixed (deterministic) loss for each parameter, in order."""


def _step(params: Sequence[torch.Tensor], vectors: Sequence[torch.Tensor], eps: float) -> float:
    """One finite-difference step for the whole direction: ``eps * rms(params) / rms(vectors)``."""
    w = sum(float(p.detach().double().pow(2).sum()) for p in params)
    v = sum(float(x.double().pow(2).sum()) for x in vectors)
    if v == 0:
        raise ValueError("the direction vectors are all zero")
    return eps * (w**0.5 if w > 0 else 1.0) / v**0.5


class FrozenActivations:
    """The on/off pattern of every ``nn.ReLU`` / ``nn.LeakyReLU`` of ``model``: :meth:`record`, then replay it
    while the context is entered (each activation becomes ``x * slope``, its slope at the recorded point).

    The ``i``-th call of a module replays its ``i``-th recorded pattern (modulo the calls recorded), so every
    replayed pass must run the same inputs in the same order as the recorded one (one ``grad_fn`` call).
    """

    def __init__(self, model: nn.Module) -> None:
        self.modules = [m for m in model.modules() if isinstance(m, nn.ReLU | nn.LeakyReLU)]
        self.slopes: dict[int, list[torch.Tensor]] = {}
        self.calls: dict[int, int] = {}

    def record(self, grad_fn: GradFn) -> None:
        """Run ``grad_fn`` once and keep each activation's slope pattern (1 / negative slope or 0 per entry)."""

        def hook(module: nn.Module, args: tuple, output: object) -> None:
            x = _feats(output)
            low = getattr(module, "negative_slope", 0.0)
            self.slopes.setdefault(id(module), []).append(torch.where(x > 0, 1.0, low).to(x.dtype).detach())

        handles = [m.register_forward_hook(hook) for m in self.modules]
        try:
            grad_fn()
        finally:
            for h in handles:
                h.remove()

    def _replay(self, module: nn.Module):
        def forward(x: object) -> object:
            slopes = self.slopes[id(module)]
            i = self.calls[id(module)] = self.calls.get(id(module), -1) + 1
            scaled = _feats(x) * slopes[i % len(slopes)]
            return x.replace(scaled) if hasattr(x, "replace") else scaled

        return forward

    def __enter__(self) -> FrozenActivations:
        self.calls.clear()
        for m in self.modules:
            if id(m) in self.slopes:
                m.forward = self._replay(m)  # an instance attribute: nn.Module.__call__ runs it
        return self

    def __exit__(self, *exc: object) -> None:
        for m in self.modules:
            m.__dict__.pop("forward", None)


def _feats(x: object) -> torch.Tensor:
    return x.feats if hasattr(x, "feats") else x  # type: ignore[return-value]


def hessian_vector_product(
    grad_fn: GradFn,
    params: Sequence[torch.Tensor],
    vectors: Sequence[torch.Tensor],
    eps: float = 1e-3,
    model: nn.Module | None = None,
) -> list[torch.Tensor]:
    """``H v`` of the loss behind ``grad_fn`` by central differences; ``params`` are perturbed in place, then restored.

    Args:
        grad_fn: gradient oracle over ``params``.
        params: the parameter tensors (shapes ``[*s_i]``).
        vectors: one direction per parameter (same shapes).
        eps: relative step (see the module doc).
        model: the network behind ``grad_fn``: its ReLUs are frozen at the current weights (see the module doc).

    Returns:
        ``[*s_i]`` tensors, one per parameter.
    """
    if model is None:
        return _difference(grad_fn, params, vectors, eps)
    frozen = FrozenActivations(model)
    frozen.record(grad_fn)
    with frozen:
        return _difference(grad_fn, params, vectors, eps)


def _difference(
    grad_fn: GradFn, params: Sequence[torch.Tensor], vectors: Sequence[torch.Tensor], eps: float
) -> list[torch.Tensor]:
    """The central difference of :func:`hessian_vector_product` (activations as they are)."""
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps!r}")
    saved = [p.detach().clone() for p in params]
    h = _step(params, vectors, eps)
    grads = []
    try:
        for sign in (1.0, -1.0):
            with torch.no_grad():
                for p, w, v in zip(params, saved, vectors):
                    p.copy_(w + sign * h * v)
            grads.append([g.detach() for g in grad_fn()])
    finally:
        with torch.no_grad():
            for p, w in zip(params, saved):
                p.copy_(w)
    return [(gp - gm) / (2 * h) for gp, gm in zip(grads[0], grads[1])]


def hutchinson_diagonal(
    grad_fn: GradFn,
    params: Sequence[torch.Tensor],
    samples: int = 4,
    eps: float = 1e-3,
    seed: int = 0,
    model: nn.Module | None = None,
) -> list[torch.Tensor]:
    """Mean of ``v * (H v)`` over ``samples`` seeded Rademacher probes: an unbiased estimate of ``diag(H)``.

    Args:
        grad_fn, params, eps, model: see :func:`hessian_vector_product` (the activations are recorded once).
        samples: probes (each costs two ``grad_fn`` calls).
        seed: seed of the probes (repeatable estimates).

    Returns:
        ``[*s_i]`` diagonal estimates, one per parameter (same dtype and device).
    """
    if not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be an integer >= 1, got {samples!r}")
    gen = torch.Generator().manual_seed(seed)
    acc = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    frozen = FrozenActivations(model) if model is not None else None
    if frozen is not None:
        frozen.record(grad_fn)
    with frozen or contextlib.nullcontext():
        for _ in range(samples):
            vs = [(torch.randint(0, 2, p.shape, generator=gen) * 2 - 1).to(p) for p in params]
            for a, v, hv in zip(acc, vs, _difference(grad_fn, params, vs, eps)):
                a += (v * hv).double()
    return [(a / samples).to(p.dtype) for a, p in zip(acc, params)]


def mean_gradients(
    model: nn.Module, params: list[torch.Tensor], batches: list[tuple[object, object]], loss_fn: LossFn
) -> list[torch.Tensor]:
    """Gradient of the mean loss over ``batches`` for each of ``params`` (in the model's current mode)."""
    if not batches:
        raise ValueError("batches is empty; give at least one (input, target) pair")
    total = [torch.zeros_like(p) for p in params]
    for inputs, target in batches:
        args = inputs if isinstance(inputs, tuple) else (inputs,)
        grads = torch.autograd.grad(loss_fn(model(*args), target), params, allow_unused=True)
        for t, g in zip(total, grads):
            if g is not None:
                t += g.detach()
    return [t / len(batches) for t in total]


class HessianOBD(Importance):
    """Optimal Brain Damage (LeCun et al. 1990) with the true Hessian diagonal, by Hutchinson's estimator.

    ``H_ww`` of the mean loss over the batches (eval mode) from ``samples`` probes of
    :func:`hutchinson_diagonal` (two gradient passes over the batches each); saliency ``0.5 * H_ww * w^2``
    summed per channel over its producers' weights and biases, as :class:`~.importance.Fisher`. Unlike the
    Fisher diagonal this one can be negative (negative curvature): such channels go first.
    """

    name = "hessian"
    needs_data = True

    def __init__(self, samples: int = 4, eps: float = 1e-3, seed: int = 0) -> None:
        if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
            raise ValueError(f"samples must be an integer >= 1, got {samples!r}")
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps!r}")
        self.samples, self.eps, self.seed = samples, float(eps), seed

    def compute(self, model, graph, batches, loss_fn) -> Scores:
        if loss_fn is None:
            raise ValueError("criterion 'hessian' needs loss_fn(output, target) -> scalar loss")
        batches = list(batches)
        mods = producer_modules(model, graph)
        params = [p for mod in mods.values() for p in weight_and_bias(mod)]
        was = model.training
        model.eval()
        try:
            diag = hutchinson_diagonal(
                lambda: mean_gradients(model, params, batches, loss_fn),
                params,
                self.samples,
                self.eps,
                self.seed,
                model,
            )
        finally:
            model.train(was)
        it = iter(diag)
        return obd_scores(graph, mods, {name: [next(it) for _ in weight_and_bias(mod)] for name, mod in mods.items()})


register_criterion("hessian", HessianOBD)
