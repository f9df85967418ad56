"""The pruning study runs end to end at CI size and writes what it promises (JSON, Pareto plot, table)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _study():
    spec = importlib.util.spec_from_file_location("prune_study", ROOT / "benchmarks" / "prune_study.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_smoke_study_writes_rows_plot_and_table(tmp_path) -> None:
    study = _study()
    out = study.main(["--smoke", "--out", str(tmp_path)])
    rows = {r["method"]: r for r in out["rows"]}
    assert set(rows) == {"base", "scratch-channels-50", *study.SMOKE_METHODS}
    for r in rows.values():
        assert r["latency_ratio"] > 0 and r["parameters"] > 0 and r["peak_bytes"] > 0 and 0 <= r["miou"] <= 100
    assert rows["channels-l1-50"]["parameters"] < rows["base"]["parameters"]
    assert rows["scratch-channels-50"]["parameters"] == rows["channels-l1-50"]["parameters"]
    assert 0 < rows["taps-magnitude-50"]["map_entries_ratio"] < 1
    assert rows["blocks-skip-100"]["blocks_removed"]
    assert 0.5 < rows["voxels-learned-70"]["encoder_voxels_kept"] < 0.9
    saved = json.loads((tmp_path / "study.json").read_text())
    assert saved["rows"] == out["rows"] and (tmp_path / "pareto.png").stat().st_size > 0
    table = (tmp_path / "table.md").read_text()
    assert all(f"| {m}" in table for m in rows)
    again = study.main(["--smoke", "--out", str(tmp_path), "--methods", "taps-magnitude-50", "--no-scratch"])
    assert {r["method"] for r in again["rows"]} == set(rows)  # the base is reused, the other rows are kept


def test_pareto_front() -> None:
    pareto_front = _study().pareto_front

    rows = [{"method": "a", "latency_ratio": 1.0, "miou": 60}, {"method": "b", "latency_ratio": 0.5, "miou": 55},
            {"method": "c", "latency_ratio": 0.6, "miou": 50}, {"method": "d", "latency_ratio": 0.4, "miou": 30}]
    assert pareto_front(rows) == ["a", "b", "d"]
