"""The criteria comparison script runs at smoke size and writes its JSON, plots and table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from torchsparse_lite.models import MinkUNet
from torchsparse_lite.prune.masks import is_nm_sparse, prunable_weights
from torchsparse_lite.prune.task import finetune

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import prune_criteria as bench  # noqa: E402
from prune_criteria_methods import prune_by  # noqa: E402


def test_smoke_comparison_writes_rows_plots_and_table(tmp_path) -> None:
    out = bench.main(["--smoke", "--out", str(tmp_path)])
    rows = {r["method"]: r for r in out["rows"]}
    assert set(rows) == set(bench.SMOKE_METHODS)
    for name in ("l1", "thinet+ls", "scratch"):
        assert abs(rows[name]["removed"] - 0.5) < 0.05 and rows[name]["parameters"] < out["base"]["parameters"]
    assert rows["scratch"]["parameters"] == rows["l1"]["parameters"] and rows["scratch"]["extra_steps"] > 0
    assert rows["nm-2:4"]["ratio"] == 0.0 and rows["nm-2:4"]["parameters"] == out["base"]["parameters"]
    for r in rows.values():
        assert 0 <= r["miou"] <= 100 and 0 <= r["miou_before_finetune"] <= 100 and r["latency_ratio"] > 0
    assert json.loads((tmp_path / "criteria.json").read_text())["rows"] == out["rows"]
    assert (tmp_path / "criteria.png").stat().st_size > 0 and (tmp_path / "pareto_50.png").stat().st_size > 0
    table = (tmp_path / "table.md").read_text()
    assert all(f"| {m} |" in table for m in rows)
    assert (tmp_path / "base.pt").is_file()  # trained once, reused by the next run
    again = bench.main(["--smoke", "--out", str(tmp_path), "--methods", "l1"])
    assert again["base"]["miou"] == out["base"]["miou"] and again["base_training"] == out["base_training"]
    assert {r["method"] for r in again["rows"]} == set(rows)  # l1 redone, the other rows kept
    (tmp_path / "table.md").unlink()
    redrawn = bench.main(["--out", str(tmp_path), "--report"])  # from criteria.json alone, no training
    assert redrawn["rows"] == again["rows"] and (tmp_path / "table.md").is_file()


def test_nm_masks_hold_through_the_fine_tune_and_are_baked() -> None:
    args = bench.arguments(["--smoke"])
    data = bench.load_data(args)
    out = prune_by("nm-2:4", MinkUNet(4, data["classes"], cr=0.125), 0.0, data, args)
    finetune(out.model, data["train"], 2, progress=False)
    baked = out.finish(out.model)
    convs = [m for _, m in prunable_weights(baked) if getattr(m, "weight", None) is not None and m.weight.dim() == 3]
    assert convs and all(not hasattr(m, "weight_mask") for m in convs)
    assert all(is_nm_sparse(m, 2, 4) for m in convs if m.weight.shape[1] % 4 == 0)
