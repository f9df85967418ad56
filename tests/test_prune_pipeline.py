"""The pruning run: config validation, sensitivity with every schedule, scores computed once, no import cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from toy_models import TinyUNet, random_input

from torchsparse_lite.models import MinkUNet
from torchsparse_lite.prune import build_dependency_graph, iterative_prune, plan_pruning
from torchsparse_lite.prune import pipeline as pipeline_module
from torchsparse_lite.prune.config import PruneConfig
from torchsparse_lite.prune.importance import Magnitude
from torchsparse_lite.prune.pipeline import run_pipeline
from torchsparse_lite.prune.task import segmentation_batches
from torchsparse_lite.train.checkpoint import load_model

PRUNE_DIR = Path(__file__).resolve().parents[1] / "torchsparse_lite" / "prune"


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"ratio": 1.0}, "ratio"),
        ({"ratio": -0.1}, "ratio"),
        ({"ratio": "0.5"}, "ratio"),
        ({"max_ratio": 1.5}, "max_ratio"),
        ({"criterion": "l3"}, "criterion"),
        ({"schedule": "cyclic"}, "schedule"),
        ({"mode": "both"}, "mode"),
        ({"normalize": "z"}, "normalize"),
        ({"steps": 0}, "steps"),
        ({"round_to": 0}, "round_to"),
        ({"finetune_steps": -1}, "finetune_steps"),
        ({"latency_repeats": 0}, "latency_repeats"),
        ({"lr": 0}, "lr"),
        ({"bn_penalty": -1e-4}, "bn_penalty"),
        ({"netadapt_target": 1.0}, "netadapt_target"),
        ({"netadapt_step": 0.0}, "netadapt_step"),
        ({"sensitivity_ratios": []}, "sensitivity_ratios"),
        ({"sensitivity_ratios": [0.5, 0.3]}, "sensitivity_ratios"),
        ({"sensitivity_ratios": [0.5, 1.0]}, "sensitivity_ratios"),
        ({"sensitivity": True, "max_drop": -1.0}, "max_drop"),
        ({"max_drop": 1.0}, "max_drop"),  # without the sensitivity scan it derives from
        ({"nm": {"n": 3, "m": 2}}, "nm"),
        ({"nm": {"n": 2, "k": 4}}, "nm"),
        ({"rewind": True}, "rewind"),  # oneshot has nothing to rewind
    ],
)
def test_config_rejects_bad_values(bad: dict, field: str) -> None:
    with pytest.raises(ValueError, match=f"config {field}"):
        PruneConfig.from_dict(bad)
    with pytest.raises(ValueError, match=f"config {field}"):
        PruneConfig(**bad)


def test_config_types_and_schedule_combinations() -> None:
    with pytest.raises(TypeError, match="ignore"):
        PruneConfig(ignore="stem.0.conv")
    with pytest.raises(TypeError, match="rewind"):
        PruneConfig(schedule="iterative", rewind=1)
    with pytest.raises(TypeError, match="nm"):
        PruneConfig(nm=[2, 4])
    with pytest.raises(TypeError, match="JSON object"):
        PruneConfig.from_dict([("ratio", 0.5)])
    # netadapt picks its own ratios by latency: derived per-group ratios cannot apply
    with pytest.raises(ValueError, match="max_drop.*netadapt"):
        PruneConfig(schedule="netadapt", sensitivity=True, max_drop=1.0)
    # every schedule takes the scan itself, and oneshot / iterative take its ratios
    for schedule in ("oneshot", "iterative", "netadapt"):
        assert PruneConfig(schedule=schedule, sensitivity=True).sensitivity
    for schedule in ("oneshot", "iterative"):
        assert PruneConfig(schedule=schedule, sensitivity=True, max_drop=2.0).max_drop == 2.0
    assert PruneConfig(schedule="iterative", rewind="early.pt").rewind == "early.pt"
    assert PruneConfig(nm={"n": 2, "m": 4, "permute": False}).nm_pattern == (2, 4)


def test_iterative_prune_per_group_ratios() -> None:
    """A dict of final ratios: every group follows its own cubic schedule, unnamed groups stay."""
    model = TinyUNet(width=8)
    x = random_input()
    graph = build_dependency_graph(model, x)
    first, rest = graph.groups[0], graph.groups[1:]
    res = iterative_prune(model, x, {first.name: 0.5}, 2, progress=False)
    after = {g.name: g.size for g in build_dependency_graph(res.model, x).groups}
    assert after[first.name] == first.size - round(0.5 * first.size)
    assert all(after[g.name] == g.size for g in rest)
    targets = [h["target"] for h in res.history]
    assert 0 < targets[0] < targets[1] == pytest.approx(round(0.5 * first.size) / graph.total_channels)
    assert res.history[-1]["removed"] == pytest.approx(targets[-1])
    with pytest.raises(ValueError, match="final_ratio"):
        iterative_prune(model, x, {first.name: 1.0}, 2, progress=False)
    with pytest.raises(ValueError, match="steps"):
        iterative_prune(model, x, 0.5, 0, progress=False)


def test_plan_pruning_reuses_given_scores() -> None:
    model = TinyUNet(width=8).eval()
    x = random_input()
    graph = build_dependency_graph(model, x)
    scores = Magnitude(1)(model, graph)
    fresh = plan_pruning(model, x, "l1", 0.5, graph=graph)
    reused = plan_pruning(model, x, "random", 0.5, graph=graph, scores=scores)  # the scores win over the criterion
    assert reused.scores is scores
    assert {k: v.tolist() for k, v in reused.remove.items()} == {k: v.tolist() for k, v in fresh.remove.items()}
    with pytest.raises(ValueError, match="graph"):
        plan_pruning(model, x, "l1", 0.5, scores=scores)


@pytest.fixture(scope="module")
def data() -> tuple[list, list]:
    kw = {"voxel_size": 0.5, "max_points": 2000}
    return segmentation_batches(1, seed=0, **kw), segmentation_batches(1, seed=1000, **kw)


def _counting_criterion(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    l1 = Magnitude(1)

    def counted(model, graph, batches=None, loss_fn=None):
        calls.append(1)
        return l1(model, graph, batches, loss_fn)

    monkeypatch.setattr(pipeline_module, "get_criterion", lambda name: counted)
    return calls


def test_oneshot_sensitivity_scores_once(data, tmp_path, monkeypatch) -> None:
    calls = _counting_criterion(monkeypatch)
    cfg = PruneConfig(ignore=["stem.conv"], sensitivity=True, sensitivity_ratios=[0.25, 0.5], max_drop=1e9,
                      finetune_steps=0, latency_repeats=1)  # fmt: skip
    report = run_pipeline(TinyUNet(4, 9), cfg, *data, 9, tmp_path, progress=False, save_model=False)
    assert len(calls) == 1  # the scan's scores are the ones the selection uses
    assert set(report["derived_ratios"].values()) == {0.5}
    for before, after in report["kept_channels"].values():
        assert after == before - round(0.5 * before)
    assert report["pruned_vs_masked_max_abs_diff"] < 1e-4
    assert (tmp_path / "sensitivity.png").stat().st_size > 0


def test_iterative_follows_sensitivity_ratios(data, tmp_path) -> None:
    """Iterative pruning takes the derived per-group ratios (not ``ratio``), here with rewinding to a checkpoint."""
    model = TinyUNet(4, 9)
    torch.save(model, tmp_path / "early.pt")  # a whole module also serves as rewind point
    cfg = PruneConfig(
        ratio=0.1,
        ignore=["stem.conv"],
        schedule="iterative",
        steps=2,
        sensitivity=True,
        sensitivity_ratios=[0.25, 0.5],
        max_drop=1e9,
        finetune_steps=2,
        latency_repeats=1,
        rewind=str(tmp_path / "early.pt"),
    )
    report = run_pipeline(model, cfg, *data, 9, tmp_path / "out", progress=False, save_model=False)
    ratios = report["derived_ratios"]
    assert set(ratios.values()) == {0.5}
    for name, (before, after) in report["kept_channels"].items():
        assert after == before - round(ratios[name] * before), name
    assert [h["step"] for h in report["iterative"]] == [1, 2]
    assert report["iterative"][-1]["removed"] == pytest.approx(report["iterative"][-1]["target"], abs=0.02)


def test_run_pipeline_rejects_bad_arguments(data, tmp_path) -> None:
    with pytest.raises(TypeError, match="cfg"):
        run_pipeline(MinkUNet(4, 9, cr=0.125), {"ratio": 0.5}, *data, 9, tmp_path)
    with pytest.raises(ValueError, match="at least one batch"):
        run_pipeline(MinkUNet(4, 9, cr=0.125), PruneConfig(), data[0], [], 9, tmp_path)


def test_prune_cli_module_is_imported_by_no_library_module() -> None:
    """``cmd_prune`` sits at the top of the package: nothing else in ``prune`` imports it."""
    for path in PRUNE_DIR.glob("*.py"):
        if path.name == "cmd_prune.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert "cmd" not in (node.module or ""), f"{path.name} imports {node.module}"


@pytest.mark.parametrize("channels", [0.0, 0.3])
def test_pipeline_composes_blocks_channels_and_taps(data, tmp_path, channels: float) -> None:
    cfg = PruneConfig(ratio=channels, ignore=["stem.0.conv"], blocks={"ratio": 0.5, "criterion": "bn"},
                      taps={"ratio": 0.3, "criterion": "contribution"}, finetune_steps=1,
                      latency_repeats=1)  # fmt: skip
    report = run_pipeline(MinkUNet(4, 9, cr=0.125), cfg, *data, 9, tmp_path, progress=False)
    pruned = report["model"]
    assert report["blocks"]["removed"] and all(
        isinstance(pruned.get_submodule(n), torch.nn.Identity) for n in report["blocks"]["removed"]
    )
    assert report["taps"]["map_entries_ratio"] < 1.0
    assert ("kept_channels" in report) == bool(channels)
    assert report["after"]["macs"] < report["before"]["macs"]
    loaded, _ = load_model(tmp_path / "pruned.pt")
    x = data[1][0][0]
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), pruned(x), rtol=0, atol=0)


def test_pipeline_wires_voxel_drops_with_budget(data, tmp_path) -> None:
    cfg = PruneConfig(ratio=0.0, voxels={"keep": 0.6, "stages": ["stage1", "stage2"]}, finetune_steps=2,
                      latency_repeats=1)  # fmt: skip
    report = run_pipeline(MinkUNet(4, 9, cr=0.125), cfg, *data, 9, tmp_path, progress=False)
    stats = report["voxels"]["after"]
    assert set(stats) == {"stage1", "stage2"}
    assert all(0.5 < s["keep_ratio"] <= 0.7 for s in stats.values())  # per-sample rounding of 0.6
    loaded, _ = load_model(tmp_path / "pruned.pt")
    x = data[1][0][0]
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), report["model"](x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="voxels keep"):
        PruneConfig(voxels={"keep": 0.0})
    with pytest.raises(ValueError, match="voxels stages"):
        PruneConfig(voxels={"stages": ["stem"]})
