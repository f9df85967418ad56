"""Every Triton kernel compiles to a cubin for sm_90 ahead of time (no GPU needed).

The interpreter tests check the numerics; this checks that the same kernel
sources also pass Triton's GPU compiler (layouts, ``tl.dot`` shapes and dtypes
with masks, atomics, while loops), which the interpreter never exercises.
The compiler cannot run in a process whose kernels were decorated under
``TRITON_INTERPRET=1``, so the test compiles in a fresh subprocess
(``python tests/test_kernels_compile.py``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.triton

ARCH = 90


def _compile(kernel: object, signature: dict[str, str], constexprs: dict[str, object]) -> str:
    """PTX of ``kernel`` compiled for sm_``ARCH`` (unlisted arguments are constexprs)."""
    import triton  # noqa: PLC0415 - runs only in the subprocess
    from triton.backends.compiler import GPUTarget  # noqa: PLC0415

    sig = {n: signature.get(n, "constexpr") for n in kernel.arg_names}
    src = triton.compiler.ASTSource(fn=kernel, signature=sig, constexprs=constexprs)
    return triton.compile(src, target=GPUTarget("cuda", ARCH, 32)).asm["ptx"]


def _has_atomics(ptx: str) -> bool:
    """True when the PTX holds a global atomic or reduction instruction (``atom.*`` / ``red.*``)."""
    return re.search(r"(^|[\s}])(atom|red)\.", ptx, re.M) is not None


def _conv_sig(dt: str, table: bool) -> dict[str, str]:
    sig = {"feats_ptr": f"*{dt}", "weight_ptr": f"*{dt}", "out_ptr": "*fp32"}
    ints = ["tiles_m", "n_offs", "n_rows", "n_cin", "n_cout", "stride_fm", "stride_fk", "stride_wo", "stride_wk"]
    sig.update({n: "i32" for n in ints + ["stride_wn", "stride_om", "stride_on"]})
    ptrs = ["nbmap_ptr", "offs_ptr"] if table else ["in_idx_ptr", "out_idx_ptr", "grp_offset_ptr", "grp_start_ptr"]
    sig.update({n: "*i32" if table else "*i64" for n in ptrs + ([] if table else ["grp_count_ptr"])})
    return sig


def compile_all() -> None:
    """Compile every kernel (all dtypes of the conv kernels) and check where atomics are."""
    from torchsparse_lite.kernels import (  # noqa: PLC0415
        gather_gemm_scatter,
        hash_index,
        implicit_gemm,
        sort_index,
        weight_grad,
    )

    for dt in ("fp32", "fp16", "bf16"):
        tiles = {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32, "UPCAST": False}
        tiles["PRECISION"] = "tf32" if dt == "fp32" else "ieee"
        ptx = _compile(gather_gemm_scatter.gather_gemm_scatter_kernel, _conv_sig(dt, False), tiles)
        assert _has_atomics(ptx), "the weight-stationary scatter must be atomic"
        ptx = _compile(implicit_gemm.implicit_gemm_kernel, _conv_sig(dt, True), {**tiles, "ACCUMULATE": True})
        assert not _has_atomics(ptx), "the output-stationary dataflow must not use atomics"
        sig = {"feats_ptr": f"*{dt}", "grad_ptr": f"*{dt}", "part_ptr": "*fp32"}
        sig.update({n: "*i64" for n in ("in_idx_ptr", "out_idx_ptr", "starts_ptr", "counts_ptr")})
        ints = ("n_split", "split_rows", "n_cin", "n_cout", "stride_fm", "stride_fk", "stride_gm", "stride_gn")
        sig.update({n: "i32" for n in ints})
        ptx = _compile(weight_grad.weight_grad_kernel, sig, tiles)
        assert not _has_atomics(ptx), "the weight gradient must not use atomics"
    sig = {"table_keys_ptr": "*i64", "table_rows_ptr": "*i64", "keys_ptr": "*i64", "n": "i32", "mask_cap": "i64"}
    assert _has_atomics(_compile(hash_index.hash_insert_kernel, {**sig, "dup_ptr": "*i64"}, {"BLOCK": 128}))
    _compile(hash_index.hash_query_kernel, {**sig, "out_ptr": "*i64"}, {"BLOCK": 128})
    sig = {"sorted_ptr": "*i64", "order_ptr": "*i64", "keys_ptr": "*i64", "out_ptr": "*i64"}
    sig.update({"n_keys": "i32", "n_sorted": "i32", "n_steps": "i32"})
    _compile(sort_index.sorted_query_kernel, sig, {"BLOCK": 128})


def test_kernels_compile_for_sm90() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode == 3:
        pytest.skip(proc.stdout.strip())
    assert proc.returncode == 0, proc.stderr[-4000:]


if __name__ == "__main__":
    try:
        compile_all()
    except FileNotFoundError as err:  # a Triton install without its bundled ptxas
        print(f"Triton's GPU toolchain is unavailable: {err}")
        sys.exit(3)
    print("all kernels compiled")
