"""Schedules: cubic sparsity, iterative pruning with rewinding, sensitivity, NetAdapt search, CLI."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from toy_models import TinyUNet, random_input

from torchsparse_lite.__main__ import main
from torchsparse_lite.models import MinkUNet
from torchsparse_lite.models.stats import count_macs
from torchsparse_lite.prune import (
    build_dependency_graph,
    cubic_sparsity,
    iterative_prune,
    netadapt_search,
    ratios_for_drop,
    sensitivity_analysis,
)
from torchsparse_lite.prune.importance import Magnitude
from torchsparse_lite.train.checkpoint import load_model, save_checkpoint


def test_cubic_schedule() -> None:
    assert cubic_sparsity(0, 10, 0.8) == 0.0
    assert cubic_sparsity(10, 10, 0.8) == pytest.approx(0.8)
    assert cubic_sparsity(5, 10, 0.8) == pytest.approx(0.8 * (1 - 0.5**3))
    vals = [cubic_sparsity(t, 10, 0.8) for t in range(11)]
    steps = [b - a for a, b in zip(vals, vals[1:])]
    assert all(x >= y for x, y in zip(steps, steps[1:]))  # prunes fast first, then slower


def test_iterative_prune_with_rewind() -> None:
    model = TinyUNet(width=8)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    x = random_input()
    tuned = []

    def finetune(m: nn.Module) -> None:  # perturb every weight so rewinding is visible
        tuned.append(1)
        with torch.no_grad():
            for p in m.parameters():
                p.add_(1.0)

    res = iterative_prune(model, x, 0.5, 3, finetune=finetune, evaluate=lambda m: 1.0, rewind_state=init,
                          progress=False)  # fmt: skip
    assert len(tuned) == 3 and [h["step"] for h in res.history] == [1, 2, 3]
    assert res.history[-1]["removed"] == pytest.approx(0.5, abs=0.02)
    assert res.history[0]["removed"] < res.history[1]["removed"] < res.history[2]["removed"]
    # the last step rewound kept weights to init, then fine-tuning added 1.0 once
    conv = res.model.up.up.conv
    kept = res.origin["up.up.conv"]
    expected = init["up.up.conv.weight"][:, kept["in"]][:, :, kept["out"]] + 1.0
    torch.testing.assert_close(conv.weight.detach(), expected)
    assert model.up.up.conv.weight.shape[2] == 8  # the input model is untouched


def test_sensitivity_and_ratios() -> None:
    model = TinyUNet(width=8).eval()
    x = random_input()
    graph = build_dependency_graph(model, x)
    scores = Magnitude(1)(model, graph)
    ref = model(x).detach()

    def metric(m: nn.Module) -> float:  # fidelity to the unpruned output, higher is better
        return -float((m(x) - ref).abs().mean())

    sens = sensitivity_analysis(model, graph, scores, metric, (0.25, 0.5, 0.75), progress=False)
    assert sens["base"] == 0.0 and set(sens["curves"]) == {g.name for g in graph.groups}
    assert all(len(c) == 3 and all(v <= 0 for v in c) for c in sens["curves"].values())
    ratios = ratios_for_drop(sens, 1e9)
    assert set(ratios.values()) == {0.75}
    assert set(ratios_for_drop(sens, -1.0).values()) == {0.0}


def test_netadapt_reaches_latency_target() -> None:
    model = TinyUNet(width=8).eval()
    x = random_input()
    base = count_macs(model, x)
    ref = model(x).detach()

    def metric(m: nn.Module) -> float:
        return -float((m(x) - ref).abs().mean())

    pruned, hist = netadapt_search(model, x, lambda m: count_macs(m, x) / base, metric, 0.6, step_fraction=0.25,
                                   max_iters=10, progress=False)  # fmt: skip
    assert hist[-1]["latency"] <= 0.6 and count_macs(pruned, x) <= 0.6 * base
    assert all(h["latency"] < p["latency"] for p, h in zip(hist, hist[1:]))


def test_cli_prune(tmp_path) -> None:
    model = MinkUNet(4, 9, cr=0.125)
    save_checkpoint(tmp_path / "ck.pt", model, {"voxel_size": 0.5}, epoch=1)  # the training package's format
    cfg = {"criterion": "l1", "ratio": 0.5, "finetune_steps": 1, "latency_repeats": 1,
           "data": {"train_scans": 1, "val_scans": 1, "max_points": 2000}}  # fmt: skip
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    out = tmp_path / "out"
    rc = main(["prune", "--checkpoint", str(tmp_path / "ck.pt"), "--config", str(tmp_path / "cfg.json"),
               "--out", str(out), "--no-progress"])  # fmt: skip
    assert rc == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["after"]["parameters"] < rep["before"]["parameters"]
    assert rep["after"]["macs"] < rep["before"]["macs"]
    assert rep["pruned_vs_masked_max_abs_diff"] < 1e-4
    assert "cpu_latency_ms" in rep["after"] and (out / "report.png").stat().st_size > 0
    # the written pruned checkpoint loads back through the same loader
    again, _ = load_model(str(out / "pruned.pt"))
    assert sum(p.numel() for p in again.parameters()) == rep["after"]["parameters"]
    (tmp_path / "bad.json").write_text('{"ratoi": 0.5}')
    with pytest.raises(ValueError, match="unknown key"):
        main(["prune", "--checkpoint", str(tmp_path / "ck.pt"), "--config", str(tmp_path / "bad.json")])
