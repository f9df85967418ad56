"""Ahead of time: record the launches the wrappers make, compile them for a GPU, read ptxas's report.

Why this exists: the test suite runs the kernels on the CPU through the
interpreter, which checks the arithmetic but never the code the GPU would
run. Compiling "the kernel" by hand is not enough either: what reaches the GPU
is one *specialisation* per launch, fixed by the launcher from the arguments
(an int equal to 1 becomes a constant, ints and pointers divisible by 16 get
alignment hints that enable vector loads, ints past 2**31 become i64) and
from the constexprs and ``num_warps``/``num_stages`` the wrapper picked.

:func:`capture_launches` replaces ``JITFunction.run`` for the duration of a
``with`` block: every ``kernel[grid](...)`` made by the real wrappers is bound
exactly as ``JITFunction.run`` binds it (same binder, same ``_pack_args``) for
each requested GPU architecture, recorded as a :class:`Launch`, and not
executed. No GPU is needed, so any CPU tensors will do. :func:`ptxas_report`
then compiles one launch and runs ``ptxas -v`` on its PTX: registers per
thread and spill bytes, the numbers that decide whether a tile size is fast.

The recorder leans on Triton internals (the binder, ``_pack_args``, the
knobs), which move between Triton versions; they are imported where used, so
that importing this module (the conv wrapper asks :func:`capturing`) never
depends on them.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import importlib
import json
import multiprocessing
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import triton
from triton.runtime.jit import JITFunction

from .device import launch_device

_CAPTURING: contextvars.ContextVar[bool] = contextvars.ContextVar("torchsparse_lite_capturing", default=False)


def capturing() -> bool:
    """True inside :func:`capture_launches` (launches are recorded, not run: CPU tensors are fine)."""
    return _CAPTURING.get()


@dataclass(frozen=True)
class Launch:
    """One kernel launch as the launcher would compile it for ``arch``.

    Attributes:
        kernel: the kernel's function name.
        arch: compute capability as an int (80 = A100, 90 = H100/H200).
        signature: argument name -> Triton type (``"*fp16"``, ``"i32"``, ``"constexpr"``).
        constexprs: constant arguments (explicit constexprs and ints specialised to 1).
        attrs: alignment hints (``tt.divisibility``) per argument path.
        options: the parsed backend options (``num_warps``, ``num_stages``, ...).
        tag: free text set by :func:`capture_launches`'s caller (what was running).
        device: the device made current around the launch by
            :func:`~.device.on_device` (``"None"`` when the wrapper set none).
    """

    kernel: str
    arch: int
    signature: dict
    constexprs: dict
    attrs: dict
    options: dict
    tag: str = ""
    device: str = "None"
    fn: JITFunction | None = field(default=None, compare=False, repr=False)

    @property
    def key(self) -> str:
        """Identity of the compiled variant (two launches with one key share one binary)."""
        return repr((self.kernel, self.arch, sorted(self.signature.items()), sorted(map(repr, self.constexprs.items())),
                     sorted(map(repr, self.attrs.items())), sorted(map(repr, self.options.items()))))

    @property
    def variant(self) -> str:
        """Short human label: the constexprs that name tiles and modes, warps and stages."""
        keep = {name: v for (i,), v in self.constexprs.items() if (name := self.fn.arg_names[i]).isupper()}
        ones = [self.fn.arg_names[i] for (i,), v in self.constexprs.items() if not self.fn.arg_names[i].isupper()]
        dt = self.signature.get(self.fn.arg_names[0], "")
        text = " ".join(f"{k}={v}" for k, v in keep.items())
        return f"{dt} {text} w{self.options['num_warps']}s{self.options['num_stages']} const1={','.join(ones) or '-'}"


_RUN_KNOBS = ("instrumentation_mode", "fpsan_homomorphic_casts")


class _Recorder:
    """Binds launches per architecture with the launcher's own code (binders cached per kernel and arch)."""

    def __init__(self, archs: tuple[int, ...]) -> None:
        self.archs = archs
        self.launches: list[Launch] = []
        self.tag = ""
        self._binders: dict[tuple[int, int], tuple] = {}

    def _binder(self, fn: JITFunction, arch: int) -> tuple:
        from triton.backends.compiler import GPUTarget  # noqa: PLC0415 - Triton internals, see the docstring
        from triton.compiler import make_backend  # noqa: PLC0415
        from triton.runtime.jit import create_function_from_signature  # noqa: PLC0415

        key = (id(fn), arch)
        if key not in self._binders:
            backend = make_backend(GPUTarget("cuda", arch, 32))
            fields = set(backend.parse_options({}).__dict__)
            self._binders[key] = (backend, create_function_from_signature(fn.signature, fn.params, backend), fields)
        return self._binders[key]

    def record(self, fn: JITFunction, args: tuple, kwargs: dict) -> None:
        from triton import knobs  # noqa: PLC0415 - Triton internals, see the module docstring

        device = str(launch_device())
        for arch in self.archs:
            backend, binder, fields = self._binder(fn, arch)
            # The options JITFunction.run adds before binding: ``debug``, and the compilation knobs
            # that are options in this Triton version (3.9 has both of _RUN_KNOBS; older ones fewer).
            opts = {**kwargs, "debug": kwargs.get("debug", fn.debug) or knobs.runtime.debug}
            opts.update({k: getattr(knobs.compilation, k) for k in _RUN_KNOBS
                         if k in fields and hasattr(knobs.compilation, k)})
            bound, spec, options = binder(*args, **opts)
            options, signature, constexprs, attrs = fn._pack_args(backend, opts, bound, spec, options)
            self.launches.append(Launch(fn.__name__, arch, signature, constexprs, attrs, dict(options.__dict__),
                                        self.tag, device, fn))


@contextlib.contextmanager
def capture_launches(archs: tuple[int, ...] = (80, 90)) -> Iterator[_Recorder]:
    """Record (not run) every Triton launch in the block, bound for each of ``archs``.

    Yields a recorder: ``rec.launches`` is the list of :class:`Launch`, and
    setting ``rec.tag`` labels the launches recorded after it. Kernels must
    have been decorated without ``TRITON_INTERPRET=1`` (interpreted kernels
    are plain Python and are not recorded).
    """
    if not archs or not all(isinstance(a, int) and a >= 75 for a in archs):
        raise ValueError(f"archs must be compute capabilities like (80, 90), got {archs!r}")
    rec = _Recorder(tuple(archs))
    original = JITFunction.run

    def run(self, *args, grid, warmup, **kwargs):
        rec.record(self, args, kwargs)

    JITFunction.run = run
    token = _CAPTURING.set(True)
    try:
        yield rec
    finally:
        JITFunction.run = original
        _CAPTURING.reset(token)


def unique(launches: list[Launch]) -> list[Launch]:
    """One launch per compiled variant, first-seen order (tags of duplicates are joined)."""
    seen: dict[str, Launch] = {}
    for la in launches:
        old = seen.get(la.key)
        if old is None:
            seen[la.key] = la
        elif la.tag and la.tag not in old.tag.split("; "):
            seen[la.key] = Launch(**{**old.__dict__, "tag": f"{old.tag}; {la.tag}" if old.tag else la.tag})
    return list(seen.values())


def _compile_spec(spec: tuple) -> float:
    """Worker of :func:`precompile`: compile one launch given as plain data; returns seconds spent."""
    from triton.backends.compiler import GPUTarget  # noqa: PLC0415
    from triton.compiler import ASTSource  # noqa: PLC0415

    module, name, arch, signature, constexprs, attrs, options = spec
    start = time.perf_counter()
    fn = getattr(importlib.import_module(module), name)
    triton.compile(ASTSource(fn, signature, constexprs, attrs), target=GPUTarget("cuda", arch, 32), options=options)
    return time.perf_counter() - start


def precompile(launches: list[Launch], workers: int | None = None) -> tuple[int, float]:
    """Compile ``launches`` in parallel worker processes, filling Triton's on-disk cache.

    A later launch with the same specialisation then *loads* its binary
    instead of compiling it (the cache key is the same one ``JITFunction.run``
    computes, since the launches were bound by its own code). Triton compiles
    one kernel at a time per process, so a run that needs a hundred variants
    spends minutes in the compiler unless they are built side by side.

    Returns:
        (number of distinct variants, compile seconds summed over workers).
    """
    specs = [(la.fn.__module__, la.fn.__name__, la.arch, la.signature, la.constexprs, la.attrs, la.options)
             for la in unique(launches)]
    if not specs:
        return 0, 0.0
    workers = max(1, min(len(specs), workers or (os.cpu_count() or 1)))
    if workers == 1:
        return len(specs), sum(map(_compile_spec, specs))
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return len(specs), sum(pool.map(_compile_spec, specs))


@dataclass(frozen=True)
class PtxasReport:
    """What ``ptxas -v`` says about one compiled launch (bytes are per thread)."""

    regs: int
    spill_stores: int
    spill_loads: int
    stack: int
    atomics: bool

    @property
    def spills(self) -> int:
        return self.spill_stores + self.spill_loads


def compile_launch(launch: Launch):
    """The :class:`triton.compiler.CompiledKernel` of ``launch`` (Triton's on-disk cache applies)."""
    from triton.backends.compiler import GPUTarget  # noqa: PLC0415
    from triton.compiler import ASTSource  # noqa: PLC0415

    src = ASTSource(launch.fn, launch.signature, launch.constexprs, launch.attrs)
    return triton.compile(src, target=GPUTarget("cuda", launch.arch, 32), options=launch.options)


_ATOMIC = re.compile(r"(^|[\s}])(atom|red)\.", re.M)


def parse_ptxas_log(log: str) -> tuple[int, int, int, int]:
    """(registers, spill-store bytes, spill-load bytes, stack bytes) from a ``ptxas -v`` log."""
    regs = re.search(r"Used (\d+) registers", log)
    spill = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", log)
    if regs is None or spill is None:
        raise ValueError(f"not a ptxas -v report: {log[-500:]!r}")
    return int(regs.group(1)), int(spill.group(2)), int(spill.group(3)), int(spill.group(1))


def ptxas_report(launch: Launch) -> PtxasReport:
    """Compile ``launch`` and run ``ptxas -v`` on its PTX (Triton's own ptxas, flags as Triton passes them).

    The report is kept in Triton's cache under a hash of the PTX and the
    ptxas command, so a second run over unchanged kernels costs no ptxas call.
    """
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability  # noqa: PLC0415
    from triton.runtime.cache import get_cache_manager  # noqa: PLC0415

    ptx = compile_launch(launch).asm["ptx"]
    fmad = [] if launch.options.get("enable_fp_fusion", True) else ["--fmad=false"]
    flags = ["-v", *fmad, "--regAllocOptLevel=2", f"--gpu-name={sm_arch_from_capability(launch.arch)}"]
    ptxas = get_ptxas(launch.arch).path
    cache = get_cache_manager(hashlib.sha256("\0".join([ptxas, *flags, ptx]).encode()).hexdigest())
    cached = cache.get_file("ptxas_report.json")
    if cached is not None:
        return PtxasReport(**json.loads(Path(cached).read_text()))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.ptx"
        path.write_text(ptx)
        cmd = [ptxas, *flags, str(path), "-o", str(path.with_suffix(".o"))]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    regs, stores, loads, stack = parse_ptxas_log(proc.stderr + proc.stdout)
    report = PtxasReport(regs, stores, loads, stack, _ATOMIC.search(ptx) is not None)
    cache.put(json.dumps(report.__dict__), "ptxas_report.json", binary=False)
    return report
