"""Hutchinson Hessian-diagonal OBD: exact Hessian-vector products, convergence to the exact diagonal, the criterion."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.func import functional_call
from toy_models import TinyUNet, random_input

from torchsparse_lite.models import MinkUNet
from torchsparse_lite.prune import (
    HessianOBD,
    build_dependency_graph,
    get_criterion,
    hessian_vector_product,
    hutchinson_diagonal,
)
from torchsparse_lite.prune.config import PruneConfig
from torchsparse_lite.prune.hessian import mean_gradients
from torchsparse_lite.prune.importance import obd_scores, producer_modules
from torchsparse_lite.prune.pipeline import run_pipeline
from torchsparse_lite.prune.task import segmentation_batches


@pytest.fixture(scope="module")
def mlp() -> SimpleNamespace:
    """A dense float64 MLP (linear, batch norm, ReLU, tanh) whose Hessian autograd computes exactly."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 3))
    model = model.double().eval()
    with torch.no_grad():
        model[1].running_mean.normal_()
        model[1].running_var.uniform_(0.5, 1.5)
    x, y = torch.randn(64, 5, dtype=torch.float64), torch.randint(0, 3, (64,))
    names = [n for n, _ in model.named_parameters()]
    params = list(model.parameters())

    def loss_of(flat: torch.Tensor) -> torch.Tensor:
        chunks = torch.split(flat, [p.numel() for p in params])
        weights = {n: c.reshape(p.shape) for n, c, p in zip(names, chunks, params)}
        return nn.functional.cross_entropy(functional_call(model, weights, (x,)), y)

    hessian = torch.autograd.functional.hessian(loss_of, torch.cat([p.detach().reshape(-1) for p in params]))
    diag = torch.split(hessian.diagonal(), [p.numel() for p in params])
    return SimpleNamespace(
        model=model, params=params, x=x, y=y, hessian=hessian,
        diag={n: d.reshape(p.shape) for n, d, p in zip(names, diag, params)},
        grad_fn=lambda: mean_gradients(model, params, [(x, y)], nn.functional.cross_entropy),
    )  # fmt: skip


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def test_finite_difference_hvp_is_exact_to_second_order(mlp) -> None:
    before = [p.detach().clone() for p in mlp.params]
    v = [torch.randn_like(p) for p in mlp.params]
    exact = mlp.hessian @ _flat(v)

    def error(eps: float, model: nn.Module | None) -> float:
        hv = hessian_vector_product(mlp.grad_fn, mlp.params, v, eps, model)
        return float((_flat(hv) - exact).norm() / exact.norm())

    frozen = [error(eps, mlp.model) for eps in (1e-1, 1e-2, 1e-4)]
    assert frozen[2] < 1e-6 < frozen[1] < frozen[0] / 50 < 1e-2  # O(eps^2)
    assert all(torch.equal(p, b) for p, b in zip(mlp.params, before))  # restored bit for bit


def test_hutchinson_converges_to_exact_diagonal(mlp) -> None:
    exact = mlp.hessian.diagonal()

    def error(n: int) -> float:
        est = _flat(hutchinson_diagonal(mlp.grad_fn, mlp.params, n, 1e-3, model=mlp.model))
        return float((est - exact).norm() / exact.norm())

    errors = {n: error(n) for n in (10, 100, 1000)}
    assert errors[1000] < 0.15
    assert errors[1000] < errors[100] / 2 < errors[10] / 4  # ~ 1 / sqrt(samples)
    assert error(10) == errors[10]  # seeded: the same probes again
    with pytest.raises(ValueError, match="samples"):
        hutchinson_diagonal(mlp.grad_fn, mlp.params, 0)


def test_obd_saliency_converges_to_the_exact_one(mlp) -> None:
    graph = build_dependency_graph(mlp.model, mlp.x)
    assert [g.name for g in graph.groups] == ["0", "3"]
    mods = producer_modules(mlp.model, graph)
    exact = obd_scores(graph, mods, {n: [mlp.diag[f"{n}.weight"], mlp.diag[f"{n}.bias"]] for n in mods})
    w = dict(mlp.model.named_parameters())
    for g in graph.groups:  # the saliency formula: 0.5 * H_ww * w^2 over the producer's row and bias
        n = g.producers[0].name
        by_hand = 0.5 * (mlp.diag[f"{n}.weight"] * w[f"{n}.weight"].detach() ** 2).sum(1)
        torch.testing.assert_close(exact[g.gid].double(), by_hand + 0.5 * mlp.diag[f"{n}.bias"] * w[f"{n}.bias"] ** 2)

    def error(samples: int) -> float:
        est = HessianOBD(samples, eps=1e-4)(mlp.model, graph, [(mlp.x, mlp.y)], nn.functional.cross_entropy)
        return float((_flat(est.values()) - _flat(exact.values())).norm() / _flat(exact.values()).norm())

    assert error(1600) < min(0.3, error(100) / 1.5)


def _double_unet() -> tuple[nn.Module, list]:
    torch.manual_seed(0)
    model = TinyUNet(width=4).double().eval()
    batches = []
    for s in range(2):
        x = random_input(200, 10, seed=s)
        batches.append((x.replace(x.feats.double()), torch.randint(0, 3, (len(x),))))
    return model, batches


def test_hvp_through_sparse_convs_is_symmetric() -> None:
    """``u'(Hv) = v'(Hu)``, whatever the step, through submanifold, strided and transposed convs and ReLUs."""
    model, batches = _double_unet()
    params = list(model.parameters())
    gen = torch.Generator().manual_seed(3)
    u, v = ([torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params] for _ in range(2))

    def grad_fn():
        return mean_gradients(model, params, batches, nn.functional.cross_entropy)

    uhv = [float(_flat(u) @ _flat(hessian_vector_product(grad_fn, params, v, eps, model))) for eps in (1e-3, 1e-6)]
    vhu = float(_flat(v) @ _flat(hessian_vector_product(grad_fn, params, u, 1e-3, model)))
    assert uhv[0] == pytest.approx(vhu, rel=1e-6) and uhv[0] == pytest.approx(uhv[1], rel=1e-6)
    assert abs(uhv[0]) > 1e-2
    kinked = float(_flat(u) @ _flat(hessian_vector_product(grad_fn, params, v, 1e-3)))  # ReLUs not frozen
    assert abs(kinked - uhv[0]) > 0.1 * abs(uhv[0])


def test_planted_zero_filter_scores_zero_on_sparse_unet() -> None:
    model, batches = _double_unet()
    plant, ch = "up.blocks.0.main.0.conv", 2
    with torch.no_grad():
        model.get_submodule(plant).weight[:, :, ch] = 0
    graph = build_dependency_graph(model, batches[0][0])
    crit = get_criterion("hessian")
    assert isinstance(crit, HessianOBD) and crit.needs_data
    scores = crit(model, graph, batches, nn.functional.cross_entropy)
    g = graph.group(plant)
    assert float(scores[g.gid][ch]) == 0.0 and set(scores) == {gr.gid for gr in graph.groups}
    assert int((scores[g.gid] == 0).sum()) == 1  # the other channels carry curvature
    assert all(torch.equal(scores[k], v) for k, v in crit(model, graph, batches, nn.functional.cross_entropy).items())
    with pytest.raises(ValueError, match="needs data"):
        crit(model, graph)


def test_pipeline_and_config_run_hessian_on_minkunet(tmp_path) -> None:
    kw = {"voxel_size": 0.5, "max_points": 2000}
    train, val = segmentation_batches(1, seed=0, **kw), segmentation_batches(1, seed=1000, **kw)
    cfg = PruneConfig.from_dict({"criterion": "hessian", "hutchinson_samples": 2, "ratio": 0.3, "finetune_steps": 1,
                                 "latency_repeats": 1, "importance_batches": 1})  # fmt: skip
    report = run_pipeline(MinkUNet(4, 9, cr=0.125), cfg, train, val, 9, tmp_path, progress=False, save_model=False)
    assert report["pruned_vs_masked_max_abs_diff"] < 1e-4
    assert report["after"]["parameters"] < report["before"]["parameters"]
    assert sum(b - a for b, a in report["kept_channels"].values()) > 0
    for bad in ({"hutchinson_samples": 0}, {"hutchinson_samples": 2.5}):
        with pytest.raises(ValueError, match="config hutchinson_samples"):
            PruneConfig.from_dict(bad)
