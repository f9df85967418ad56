"""The prepared device check (``benchmarks/gpu_check.py``) runs end to end on the CPU, and its helpers hold.

``--dry-run`` takes every code path of the GPU run on the CPU under
``TRITON_INTERPRET=1`` at tiny sizes (a synthetic scan, one repetition,
fp32 / fp16 / bf16, spconv's CPU build as the peer when installed), so a
broken section shows here and not on a rented GPU. The one step a dry run
cannot take, recording the launches to precompile (the kernels must not be
interpreted), runs in its own subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check_common as common  # noqa: E402


def test_dry_run_passes_every_section(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (out,) = tmp_path.iterdir()
    result = json.loads((out / "check.json").read_text())
    rows = result["rows"]
    assert rows and all(r["status"] == "pass" for r in rows), [r for r in rows if r["status"] != "pass"][:5]
    assert {r["section"] for r in rows} == {"conv", "maps", "determinism", "devices", "layers", "network"}
    conv = [r for r in rows if r["section"] == "conv"]
    import gpu_check_correct as correct  # noqa: PLC0415

    assert {r["case"] for r in conv} == set(correct.VARIANTS)
    assert {r["precision"] for r in conv} == set(common.DRY_PRECISIONS)
    assert {r["dataflow"] for r in conv} == set(common.DATAFLOWS)
    assert {r["grouping"] for r in conv} == set(common.GROUPINGS)
    assert {r["builder"] for r in rows if r["section"] == "maps"} == {"triton_hash", "triton_sort"}
    timed = [r for r in rows if r["section"] in ("layers", "network") and "ms" in r]
    assert {r["pass"] for r in timed} >= {"fwd", "fwdbwd", "fwd+maps", "fwdbwd+maps"}
    assert all(r["ms"] > 0 and r["frac_dense"] > 0 for r in timed if r["impl"] == "ours")
    assert (out / "table.md").read_text().startswith("# GPU check")
    assert {"conv_errors.png", "layers.png", "network.png"} <= {p.name for p in out.iterdir()}
    assert "GPU check on" in proc.stdout and "section" in proc.stdout


def test_plan_records_every_kernel_for_precompiling() -> None:
    """The launches the GPU run precompiles are recorded by the real wrappers (kernels not interpreted)."""
    code = ("import sys, collections; sys.argv = ['gpu_check.py']; import gpu_check; "
            "from torchsparse_lite.kernels import aot; "
            "u = aot.unique(gpu_check.plan_launches(90, ('fp32', 'bf16'))); "
            "import json; print(json.dumps(collections.Counter(la.kernel for la in u)))")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "benchmarks"), str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = json.loads(proc.stdout.strip().splitlines()[-1])
    for kernel in ("gather_gemm_scatter_kernel", "implicit_gemm_kernel", "weight_grad_kernel",
                   "hash_insert_kernel", "hash_query_kernel", "sorted_query_kernel"):
        assert counts.get(kernel, 0) > 0, (kernel, counts)
    assert counts["implicit_gemm_kernel"] > counts["weight_grad_kernel"]  # accumulate on and off


def test_budget_shares_and_rollover(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(common.time, "monotonic", lambda: now[0])
    b = common.Budget(100, {"a": 1, "b": 3})
    assert b.left() == pytest.approx(25)
    now[0] += 5  # "a" finishes early: its 20 s left flow to "b"
    b.enter("b")
    assert b.left() == pytest.approx(95)
    with pytest.raises(ValueError, match="unknown section"):
        b.enter("c")
    with pytest.raises(ValueError, match="budget"):
        common.Budget(0, {"a": 1})


def test_rows_and_errors() -> None:
    ref = torch.ones(4, 3)
    assert common.rel_err(ref * 1.01, ref) == pytest.approx(0.01)
    assert common.rel_err(torch.full((4, 3), float("nan")), ref) == float("inf")
    with pytest.raises(ValueError, match="shape"):
        common.rel_err(torch.ones(3, 4), ref)
    with pytest.raises(ValueError, match="status"):
        common.row("conv", "x", "ok")
    bad = common.guarded("conv", "x", {"precision": "fp32"}, lambda: 1 / 0)
    assert bad["status"] == "fail" and "ZeroDivisionError" in bad["note"] and bad["precision"] == "fp32"


def test_arguments_are_checked() -> None:
    import gpu_check  # noqa: PLC0415

    with pytest.raises(ValueError, match="--batch"):
        gpu_check.parse_args(["--batch", "0"])
    with pytest.raises(ValueError, match="--scan"):
        gpu_check.parse_args(["--scan", "/nonexistent/scan.bin"])
    coords = torch.stack([torch.zeros(1000, dtype=torch.int32), torch.arange(1000, dtype=torch.int32),
                          torch.zeros(1000, dtype=torch.int32), torch.zeros(1000, dtype=torch.int32)], 1)
    assert 90 <= gpu_check.crop(coords, 100).shape[0] <= 110
