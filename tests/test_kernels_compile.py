"""Every launch the wrappers make compiles for sm_80 and sm_90 without register spills (no GPU needed).

The interpreter tests check the numerics; this checks the code a GPU would
run. Not hand-written signatures: the real wrappers run (the conv forward and
both gradients for every dataflow x precision x channel regime, and both
coordinate indexes) with ``JITFunction.run`` replaced by the recorder of
:func:`torchsparse_lite.kernels.aot.capture_launches`, so each launch is bound
by the launcher's own code: its real types (i32/i64), the ints it
specialises to 1, its alignment hints, the constexprs and warps/stages the
wrapper chose. Each distinct variant is compiled for sm_80 and sm_90 and
``ptxas -v`` is read: zero spill bytes everywhere, atomics exactly where the
dataflow needs them, and every launch made under its tensors' device. First,
the recorder itself is checked against the launcher: ``JITFunction.run``
with a stand-in sm_90 driver (compile, never launch) must build exactly the
binaries the recorded launches compile to.

The compiler cannot run in a process whose kernels were decorated under
``TRITON_INTERPRET=1``, so the check runs in a fresh subprocess
(``python tests/test_kernels_compile.py [report.json]`` prints the table).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch

pytestmark = pytest.mark.triton

ARCHS = (80, 90)
PRECISIONS = {"fp32": (torch.float32, False), "tf32": (torch.float32, True),
              "fp16": (torch.float16, False), "bf16": (torch.bfloat16, False)}
# narrow (unaligned, smallest tiles), mid (aligned), wide (block_n 128, block_k at its cap)
REGIMES = ((3, 20), (32, 64), (128, 256))


def capture_all():
    """The launches of every conv case and both indexes, bound for ``ARCHS`` (none is run)."""
    from reference import random_coords  # noqa: PLC0415
    from torchsparse_lite.kernels import TritonHashIndex, TritonSortIndex, aot, sparse_conv_triton  # noqa: PLC0415

    from torchsparse_lite.grouping import GroupingConfig  # noqa: PLC0415
    from torchsparse_lite.kmap import build_kernel_map, pack  # noqa: PLC0415

    coords = random_coords(300, 10, batch=2, generator=torch.Generator().manual_seed(0))
    kmap = build_kernel_map(coords, (3, 3, 3), mode="submanifold", builder="hash")
    grouping = GroupingConfig("fixed", group_size=4)  # several launches a pass: accumulate off and on
    with aot.capture_launches(ARCHS) as rec:
        for flow in ("atomic", "output_stationary"):
            for prec, (dtype, tf32) in PRECISIONS.items():
                for cin, cout in REGIMES:
                    rec.tag = f"{flow} {prec} {cin}->{cout}"
                    feats = torch.randn(kmap.n_in, cin, dtype=dtype, requires_grad=True)
                    weight = torch.randn(kmap.volume, cin, cout, dtype=dtype, requires_grad=True)
                    out = sparse_conv_triton(feats, weight, kmap, grouping, dataflow=flow, allow_tf32=tf32)
                    out.backward(torch.ones_like(out))
        rec.tag = "index"
        keys = pack(coords)
        TritonHashIndex(keys).query(keys)
        TritonSortIndex(keys).lookup(keys)
    return rec.launches


def jit_compiles_what_was_recorded() -> int:
    """``JITFunction.run`` itself (a stand-in driver for sm_90, ``warmup=True``: compile, never launch) builds
    exactly the binaries the recorder's launches compile to, so a precompiled cache serves real launches.

    Returns the number of variants compared.
    """
    from torchsparse_lite.kernels import aot, conv, sparse_conv_triton  # noqa: PLC0415
    from triton.backends.compiler import GPUTarget  # noqa: PLC0415
    from triton.runtime import driver  # noqa: PLC0415
    from triton.runtime.jit import JITFunction  # noqa: PLC0415

    from torchsparse_lite.kmap import build_kernel_map  # noqa: PLC0415

    class Sm90Driver:  # the three calls JITFunction.run makes of the active driver
        def get_current_device(self):
            return 0

        def get_current_stream(self, device=None):
            return 0

        def get_current_target(self):
            return GPUTarget("cuda", 90, 32)

    coords = torch.unique(torch.randint(0, 8, (200, 3), generator=torch.Generator().manual_seed(1)), dim=0).int()
    kmap = build_kernel_map(torch.cat([torch.zeros_like(coords[:, :1]), coords], 1), 3)

    def conv_passes():
        for flow in ("atomic", "output_stationary"):
            feats = torch.randn(kmap.n_in, 24, dtype=torch.bfloat16, requires_grad=True)
            weight = torch.randn(kmap.volume, 24, 40, dtype=torch.bfloat16, requires_grad=True)
            sparse_conv_triton(feats, weight, kmap, "fixed", dataflow=flow).sum().backward()

    with aot.capture_launches((90,)) as rec:
        conv_passes()
    recorded = {aot.compile_launch(la).hash for la in aot.unique(rec.launches)}
    built, original_run, original_check = set(), JITFunction.run, conv.check_runnable

    def compile_only(self, *args, grid, warmup, **kwargs):
        built.add(original_run(self, *args, grid=grid, warmup=True, **kwargs).hash)

    previous = driver._active  # None here: no GPU, so the default driver cannot even be created
    driver.set_active(Sm90Driver())
    JITFunction.run, conv.check_runnable = compile_only, lambda feats: None
    try:
        conv_passes()
    finally:
        JITFunction.run, conv.check_runnable = original_run, original_check
        driver.set_active(previous)
    assert built == recorded, f"{len(built ^ recorded)} binaries differ between JITFunction.run and the recorder"
    return len(built)


def _row(la, rep) -> dict:
    return {"kernel": la.kernel, "arch": la.arch, "variant": la.variant, "tag": la.tag, "device": la.device,
            "regs": rep.regs, "spill_stores": rep.spill_stores, "spill_loads": rep.spill_loads,
            "atomics": rep.atomics}


def compile_all() -> list[dict]:
    """Compile every captured variant, print the ptxas table, and check spills, atomics and devices."""
    from torchsparse_lite.kernels import aot  # noqa: PLC0415

    launches = capture_all()
    assert launches and all(la.device == "cpu" for la in launches), "a launch ran outside on_device()"
    variants = aot.unique(launches)
    rows = [_row(la, aot.ptxas_report(la)) for la in variants]
    print(f"{'kernel':28s} {'sm':>3s} {'regs':>4s} {'spill st/ld':>11s}  variant  [cases]")
    for r in rows:
        print(f"{r['kernel']:28s} {r['arch']:3d} {r['regs']:4d} {r['spill_stores']:5d}/{r['spill_loads']:<5d}  "
              f"{r['variant']}  [{r['tag']}]")
    spilled = [r for r in rows if r["spill_stores"] or r["spill_loads"]]
    assert not spilled, f"{len(spilled)} variants spill registers: {spilled[:3]}"
    atomic = {"gather_gemm_scatter_kernel": True, "implicit_gemm_kernel": False, "weight_grad_kernel": False,
              "hash_insert_kernel": True, "hash_query_kernel": False, "sorted_query_kernel": False}
    for r in rows:
        assert r["atomics"] == atomic[r["kernel"]], f"{r['kernel']}: atomics={r['atomics']} in {r['variant']}"
    _check_coverage(variants)
    return rows


def _check_coverage(variants) -> None:
    """The regimes the issue named are really among the compiled variants."""
    def has(kernel: str, **want) -> bool:
        for la in variants:
            names = la.fn.arg_names
            const = {names[i]: v for (i,), v in la.constexprs.items()}
            if la.kernel == kernel and all(const.get(k) == v for k, v in want.items()):
                return True
        return False

    for kernel in ("gather_gemm_scatter_kernel", "implicit_gemm_kernel"):
        assert has(kernel, BLOCK_N=128, stride_wn=1), f"{kernel}: no forward variant with block_n 128"
        assert has(kernel, stride_wk=1), f"{kernel}: no transposed-weight (backward) variant"
        assert has(kernel, PRECISION="tf32") and has(kernel, PRECISION="ieee")
    assert has("implicit_gemm_kernel", ACCUMULATE=False) and has("implicit_gemm_kernel", ACCUMULATE=True)
    assert has("weight_grad_kernel", BLOCK_N=128)
    kinds = {la.kernel for la in variants}
    assert {"hash_insert_kernel", "hash_query_kernel", "sorted_query_kernel"} <= kinds, kinds


def test_every_launch_compiles_without_spills(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    report = tmp_path / "ptxas.json"
    cmd = [sys.executable, __file__, str(report)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode == 3:
        pytest.skip(proc.stdout.strip())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-4000:]
    assert "JITFunction.run built the recorder's" in proc.stdout
    print(proc.stdout)  # the register / spill table (shown with pytest -s)
    rows = json.loads(report.read_text())
    assert {r["arch"] for r in rows} == set(ARCHS)
    assert all(r["spill_stores"] == 0 == r["spill_loads"] for r in rows)


def test_ptxas_log_parsing() -> None:
    from torchsparse_lite.kernels.aot import parse_ptxas_log  # noqa: PLC0415

    log = ("ptxas info    : Compiling entry function 'k' for 'sm_80'\nptxas info    : Function properties for k\n"
           "    616 bytes stack frame, 616 bytes spill stores, 612 bytes spill loads\n"
           "ptxas info    : Used 255 registers, used 1 barriers, 616 bytes cumulative stack size\n")
    assert parse_ptxas_log(log) == (255, 616, 612, 616)
    with pytest.raises(ValueError, match="ptxas"):
        parse_ptxas_log("nothing here")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    start = time.perf_counter()
    try:
        same = jit_compiles_what_was_recorded()
        print(f"JITFunction.run built the recorder's {same} binaries")
        result = compile_all()
    except FileNotFoundError as err:  # a Triton install without its bundled ptxas
        print(f"Triton's GPU toolchain is unavailable: {err}")
        sys.exit(3)
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as fh:
            json.dump(result, fh, indent=1)
    print(f"{len(result)} variants compiled for sm_{'/sm_'.join(map(str, ARCHS))} without spills "
          f"in {time.perf_counter() - start:.0f} s")
