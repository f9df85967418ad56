"""Outputs of ``benchmarks/gpu_check.py``: machine record, check.json, table.md, PNG plots, the short table."""

from __future__ import annotations

import json
import math
import re
import subprocess
from collections import defaultdict
from pathlib import Path

import torch
from gpu_check_common import PRECISIONS, TOL

from torchsparse_lite.bench.env import _version, machine_info


def _driver() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout.strip()
        return out.splitlines()[0] if out else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown (no nvidia-smi)"


def machine(device: torch.device) -> dict:
    """Device name, driver, capability, GPU count and versions (torch, Triton, spconv, CUDA)."""
    info = machine_info(device)
    info["versions"]["spconv"] = info["versions"].get("spconv") or _version("spconv-cu126")
    if device.type == "cuda":
        info.update(driver=_driver(), capability=".".join(map(str, torch.cuda.get_device_capability(device))),
                    gpu_count=torch.cuda.device_count())
    else:
        info.update(driver="-", capability="-", gpu_count=0, device_name=f"{info['device_name']} (interpreter)")
    return info


def slug(result: dict) -> str:
    name = "cpu-dry-run" if result["dry_run"] else result["device_name"]
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _counts(rows: list[dict]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = defaultdict(lambda: {"pass": 0, "fail": 0, "skip": 0})
    for r in rows:
        out[r["section"]][r["status"]] += 1
    return dict(out)


def _fmt(v, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _best(rows: list[dict], keys: tuple[str, ...], metric: str = "ms") -> dict[tuple, dict]:
    """Per key tuple, the passing row with the smallest ``metric``."""
    best: dict[tuple, dict] = {}
    for r in rows:
        if r["status"] != "pass" or metric not in r:
            continue
        k = tuple(r.get(x) for x in keys)
        if k not in best or r[metric] < best[k][metric]:
            best[k] = r
    return best


def _md_table(header: list[str], lines: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_fmt(v) for v in line) + " |" for line in lines]
    return out


def _correctness_md(result: dict) -> list[str]:
    rows = result["rows"]
    lines = [[s, c["pass"], c["fail"], c["skip"]] for s, c in _counts(rows).items()]
    md = ["## Checks", ""] + _md_table(["section", "pass", "fail", "skip"], lines) + [""]
    conv = [r for r in rows if r["section"] == "conv" and "err_out" in r]
    per = []
    for p in PRECISIONS:
        errs = [max(r["err_out"], r["err_grad_feats"], r["err_grad_weight"]) for r in conv if r["precision"] == p]
        if errs:
            per.append([p, len(errs), max(errs), TOL[p]])
    md += ["Largest relative-norm error of any output or gradient, per precision:", ""]
    md += _md_table(["precision", "runs", "max error", "limit"], per) + [""]
    bad = [r for r in rows if r["status"] == "fail"]
    if bad:
        md += ["### Failures", ""] + [f"- {r['section']} {r['case']} {r.get('precision', '')} "
                                      f"{r.get('dataflow', '')} {r.get('grouping', '')}: {r.get('note', '')}"
                                      for r in bad[:60]] + [""]
    return md


def _layers_md(rows: list[dict]) -> list[str]:
    ours = [r for r in rows if r["section"] == "layers" and r.get("impl") == "ours"]
    maps = {(r["workload"], r["layer"]): r for r in rows if r.get("impl") == "maps"}
    spc = _best([r for r in rows if r["section"] == "layers" and r.get("impl") == "spconv"],
                ("workload", "layer", "precision"))
    fwd = _best([r for r in ours if r["pass"] == "fwd"], ("workload", "layer", "precision"))
    bwd = _best([r for r in ours if r["pass"] == "fwdbwd"], ("workload", "layer", "precision"))
    lines = []
    for (w, layer, p), r in fwd.items():
        b, m, s = bwd.get((w, layer, p), {}), maps.get((w, layer), {}), spc.get((w, layer, p), {})
        lines.append([w, layer, p, f"{r['grouping']}/{r['dataflow'][:6]}", r["ms"], b.get("ms"), r["tflops"],
                      r["frac_dense"], b.get("frac_dense"), m.get("map_ms_hash"), m.get("map_ms_sort"),
                      r["conv_per_map"], s.get("ms")])
    header = ["workload", "layer", "prec", "best grouping/flow", "fwd ms", "fwd+bwd ms", "TFLOP/s", "x dense fwd",
              "x dense fwd+bwd", "map ms (hash)", "map ms (sort)", "conv / map", "spconv fwd ms"]
    md = ["## Layers (best grouping and dataflow per layer)", ""] + _md_table(header, lines) + [""]
    geo = defaultdict(list)
    for r in ours:
        geo[(r["workload"], r["precision"], r["grouping"], r["dataflow"], r["pass"])].append(r["frac_dense"])
    glines = [[*k, len(v), math.exp(sum(map(math.log, v)) / len(v))] for k, v in sorted(geo.items())]
    md += ["### Per grouping strategy: geometric mean over the layers of the dense-GEMM fraction", ""]
    return md + _md_table(["workload", "prec", "grouping", "dataflow", "pass", "layers", "x dense"], glines) + [""]


def _network_md(rows: list[dict]) -> list[str]:
    net = [r for r in rows if r["section"] == "network" and r["status"] == "pass" and "ms" in r]
    by = defaultdict(dict)
    for r in net:
        by[(r["workload"], r["impl"], r["precision"], r["grouping"])][r["pass"]] = r
    passes = ("fwd", "fwd+maps", "fwdbwd", "fwdbwd+maps")
    lines = []
    for (w, impl, p, g), d in sorted(by.items()):
        first = d.get("fwd") or next(iter(d.values()))
        lines.append([w, impl, p, g, *[d[x]["ms"] if x in d else None for x in passes], first.get("tflops"),
                      first.get("frac_dense"), first.get("map_ms")])
    header = ["workload", "impl", "prec", "grouping", *[f"{x} ms" for x in passes], "TFLOP/s (fwd)", "x dense fwd",
              "maps ms"]
    return ["## MinkUNet-18 (cr 1.0)", ""] + _md_table(header, lines) + [""]


def table_md(result: dict) -> str:
    head = [f"# GPU check: {result['device_name']}", "",
            f"- driver {result.get('driver')}, capability {result.get('capability')}, GPUs {result.get('gpu_count')}",
            f"- torch {result['versions']['torch']}, Triton {result['versions']['triton']}, CUDA {result['cuda']}",
            f"- peer: {result['peer']}", f"- devices: {result['devices']}", f"- workloads: {result['workloads']} "
            f"{result['workload_sizes']}; correctness on {result['correctness_voxels']} voxels",
            f"- {result['precompiled_variants']} kernel variants precompiled ({result['compile_s_summed']} s summed; "
            f"{result['precompile']}); "
            f"run {result['elapsed_s']} s of a {result['budget_s']} s budget, {result['reps']} timed reps; "
            f"seconds per section {result['section_s']}", ""]
    return "\n".join(head + _correctness_md(result) + _layers_md(result["rows"]) + _network_md(result["rows"]))


def plots(result: dict, out_dir: Path) -> list[str]:
    """conv_errors.png, layers.png, network.png (matplotlib, Agg backend)."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    first = next(iter(result["workload_sizes"]))
    rows, names = [r for r in result["rows"] if r.get("workload", first) == first], []
    conv = [r for r in rows if r["section"] == "conv" and "err_out" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, p in enumerate(PRECISIONS):
        errs = [max(r["err_out"], r["err_grad_feats"], r["err_grad_weight"], 1e-12) for r in conv
                if r["precision"] == p]
        ax.scatter([i] * len(errs), errs, s=8, alpha=0.5)
        ax.hlines(TOL[p], i - 0.3, i + 0.3, colors="red")
    ax.set(xticks=range(len(PRECISIONS)), xticklabels=list(PRECISIONS), yscale="log",
           ylabel="relative-norm error (red: limit)", title="conv variants vs float64 reference")
    names.append(_save(fig, out_dir / "conv_errors.png"))
    names.append(_bars(plt, _best([r for r in rows if r["section"] == "layers" and r.get("pass") == "fwd"],
                                  ("layer", "precision", "impl"), "ms"), "layer", "tflops", out_dir / "layers.png",
                       f"layers on {first}, best grouping and dataflow: TFLOP/s (fwd)"))
    names.append(_bars(plt, _best([r for r in rows if r["section"] == "network" and "ms" in r],
                                  ("pass", "precision", "impl"), "ms"), "pass", "ms", out_dir / "network.png",
                       f"MinkUNet-18 on {first}, best grouping: ms per call"))
    return names


def _bars(plt, best: dict, xkey: str, metric: str, path: Path, title: str) -> str:
    xs = sorted({k[0] for k in best}, key=str)
    series = sorted({k[1:] for k in best}, key=str)
    fig, ax = plt.subplots(figsize=(max(6, len(xs) * 0.9), 4))
    width = 0.8 / max(1, len(series))
    for j, s in enumerate(series):
        vals = [best.get((x, *s), {}).get(metric, 0.0) for x in xs]
        ax.bar([i + j * width for i in range(len(xs))], vals, width, label=" ".join(map(str, s)))
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(xs))], [str(x) for x in xs], rotation=60, ha="right",
                  fontsize=7)
    ax.set(title=title, ylabel=metric)
    ax.legend(fontsize=6, ncol=2)
    return _save(fig, path)


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    fig.clf()
    return path.name


def write(result: dict, out: Path, device: torch.device, dry: bool) -> Path:
    out_dir = Path(out) / f"gpu_{slug(result)}"
    out_dir.mkdir(parents=True, exist_ok=True)
    result["plots"] = plots(result, out_dir)
    (out_dir / "table.md").write_text(table_md(result))
    (out_dir / "check.json").write_text(json.dumps(result, indent=1, default=str))
    return out_dir


def summary(result: dict) -> str:
    """The short table printed last: check counts, then the network's best time per precision and pass."""
    lines = [f"GPU check on {result['device_name']} ({result['elapsed_s']} s); {result['peer']}"]
    lines.append(f"{'section':12s} {'pass':>5s} {'fail':>5s} {'skip':>5s} {'s':>6s}")
    for s, c in _counts(result["rows"]).items():
        lines.append(f"{s:12s} {c['pass']:5d} {c['fail']:5d} {c['skip']:5d} {result['section_s'].get(s, 0):6.1f}")
    best = _best([r for r in result["rows"] if r["section"] == "network" and "ms" in r],
                 ("workload", "impl", "precision", "pass"))
    if best:
        lines.append(f"{'network ms':34s} {'fwd':>8s} {'fwd+maps':>9s} {'fwdbwd':>8s} {'fwdbwd+maps':>12s}")
        for key in sorted({k[:3] for k in best}, key=str):
            vals = [best.get((*key, p), {}).get("ms") for p in ("fwd", "fwd+maps", "fwdbwd", "fwdbwd+maps")]
            cells = [f"{v:8.2f}" if v is not None else f"{'-':>8s}" for v in vals]
            lines.append(f"{' '.join(map(str, key)):34s} {cells[0]} {cells[1]:>9s} {cells[2]} {cells[3]:>12s}")
    return "\n".join(lines)
