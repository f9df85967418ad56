"""``python -m torchsparse_lite bench`` end to end on a tiny synthetic workload: JSON, table and PNGs written."""

from __future__ import annotations

import json

import pytest
import torch

from torchsparse_lite.__main__ import main


def test_cli_tiny_synthetic_run(tmp_path):
    out = tmp_path / "bench"
    rc = main([
        "bench", "--workloads", "synthetic_outdoor", "--max-voxels", "1500", "--models", "minkunet",
        "--max-layers", "2", "--strategies", "separate", "adaptive", "--reps", "1", "--warmup", "0",
        "--scaling", "--scaling-sizes", "800", "1600", "--scaling-reps", "1", "--out", str(out),
    ])  # fmt: skip
    assert rc == 0
    data = json.loads((out / "bench.json").read_text())
    assert data["machine"]["versions"]["torch"] == torch.__version__
    assert [w["voxels"] for w in data["workloads"]] == [1500]
    recs = data["records"]
    timed = [r for r in recs if r.get("timing")]
    assert timed and all(r["check"]["status"] == "ok" for r in timed)
    assert {r["impl"] for r in timed} >= {"ours-hash", "ours-sort", "ours-torch-separate", "ours-torch-adaptive"}
    assert all(r["vs_baseline"] == pytest.approx(1.0) for r in timed if r["impl"] == "ours-torch-separate")
    assert len(data["scaling"]["points"]) == 2 and "map_hash" in data["scaling"]["fits"]
    assert len(data["epsilon_sweep"]) == 2
    for name in ("layers_fwd.png", "layers_fwdbwd.png", "epsilon.png", "scaling.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "ours-torch-adaptive" in (out / "table.md").read_text()


def test_cli_rejects_unknown_workload(tmp_path):
    with pytest.raises(ValueError, match="unknown workloads"):
        main(["bench", "--workloads", "nope", "--out", str(tmp_path)])


def test_cli_scan_folder(tmp_path):
    rng = torch.Generator().manual_seed(0)
    scans = tmp_path / "scans"
    scans.mkdir()
    (torch.rand(3000, 4, generator=rng) * 10).numpy().tofile(scans / "a.bin")
    rc = main(["bench", "--workloads", "synthetic_outdoor", "--max-voxels", "800", "--scan-dir", str(scans),
               "--models", "resnet", "--max-layers", "1", "--strategies", "separate", "--passes", "fwd",
               "--peers", "--reps", "1", "--warmup", "0", "--no-memory", "--out", str(tmp_path / "o")])
    assert rc == 0
    names = {w["name"] for w in json.loads((tmp_path / "o" / "bench.json").read_text())["workloads"]}
    assert any(n.startswith("a_") for n in names)


def test_cli_real_workloads_need_a_data_folder(tmp_path, monkeypatch, capsys):
    """Without --data-root or $TORCHSPARSE_LITE_DATA real scans are skipped with a note; with one they are read."""
    monkeypatch.delenv("TORCHSPARSE_LITE_DATA", raising=False)
    small = ["--max-voxels", "600", "--models", "resnet", "--max-layers", "1", "--strategies", "separate",
             "--passes", "fwd", "--peers", "--reps", "1", "--warmup", "0", "--no-memory"]
    assert main(["bench", "--workloads", "kitti_0.05", *small, "--out", str(tmp_path / "a")]) == 0
    assert "skipped real workloads ['kitti_0.05']: no data folder (pass --data-root" in capsys.readouterr().err
    got = json.loads((tmp_path / "a" / "bench.json").read_text())["workloads"]
    assert len(got) == 1 and got[0]["name"].startswith("synthetic_outdoor")
    scan = tmp_path / "data" / "kitti" / "000008.bin"
    scan.parent.mkdir(parents=True)
    (torch.rand(3000, 4, generator=torch.Generator().manual_seed(1)) * 10).numpy().tofile(scan)
    assert main(["bench", "--workloads", "kitti_0.05", *small, "--data-root", str(tmp_path / "data"),
                 "--out", str(tmp_path / "b")]) == 0
    got = json.loads((tmp_path / "b" / "bench.json").read_text())["workloads"]
    assert len(got) == 1 and got[0]["name"].startswith("kitti_0.05")
