"""The criteria comparison script runs at smoke size and writes its JSON, plot and table."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_smoke_comparison_writes_rows_plot_and_table(tmp_path) -> None:
    spec = importlib.util.spec_from_file_location("prune_criteria", ROOT / "benchmarks" / "prune_criteria.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = bench.main(["--smoke", "--out", str(tmp_path)])
    rows = {r["method"]: r for r in out["rows"]}
    assert set(rows) == set(bench.SMOKE_METHODS)
    for name in ("l1", "thinet+ls"):
        assert abs(rows[name]["removed"] - 0.5) < 0.05 and rows[name]["parameters"] < out["base"]["parameters"]
    assert all(0 <= r["miou"] <= 100 and 0 <= r["miou_before_finetune"] <= 100 for r in rows.values())
    assert json.loads((tmp_path / "criteria.json").read_text())["rows"] == out["rows"]
    assert (tmp_path / "criteria.png").stat().st_size > 0
    table = (tmp_path / "table.md").read_text()
    assert all(f"| {m} |" in table for m in rows)
