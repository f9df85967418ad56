"""Figures of the pruning studies: latency-vs-mIoU Pareto plots, the criteria bars and the Markdown tables.

``prune_study.py`` (one row per method on a converged base) and ``prune_criteria.py`` (every criterion and
method at several channel ratios, one fine-tune budget) share these.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def pareto_front(rows: list[dict]) -> list[str]:
    """Methods no other row beats on both CPU latency ratio (lower) and mIoU (higher)."""
    front = []
    for r in rows:
        dominated = any(
            o["latency_ratio"] <= r["latency_ratio"] and o["miou"] >= r["miou"]
            and (o["latency_ratio"], o["miou"]) != (r["latency_ratio"], r["miou"])
            for o in rows
        )  # fmt: skip
        if not dominated:
            front.append(r["method"])
    return front


def _family(method: str) -> str:
    if "+" in method:
        return "combination"
    return method.split("-")[0]


def plot_pareto(rows: list[dict], path: Path, title: str = "Pruning a converged MinkUNet: latency vs accuracy") -> Path:
    """Scatter of CPU latency ratio (maps included) vs held-out mIoU, the Pareto front joined by a line."""
    fig, ax = plt.subplots(figsize=(9.5, 5.5))
    families = sorted({_family(r["method"]) for r in rows})
    colours = {f: plt.cm.tab20(i % 20) for i, f in enumerate(families)}  # more families than tab10's colours
    for r in rows:
        ax.scatter(r["latency_ratio"], r["miou"], color=colours[_family(r["method"])], s=40, zorder=3)
        ax.annotate(r["method"], (r["latency_ratio"], r["miou"]), fontsize=7, xytext=(4, 3),
                    textcoords="offset points")  # fmt: skip
    front = sorted((r for r in rows if r["method"] in pareto_front(rows)), key=lambda r: r["latency_ratio"])
    ax.plot([r["latency_ratio"] for r in front], [r["miou"] for r in front], "k--", lw=1, label="Pareto front")
    base = next((r for r in rows if r["method"] == "base"), None)
    if base is not None:
        ax.axhline(base["miou"] - 2, color="grey", lw=0.8, ls=":", label="base - 2 mIoU")
        ax.axvline(0.5, color="grey", lw=0.8, ls="-.", label="0.5x latency")
    for fam, c in colours.items():
        ax.scatter([], [], color=c, label=fam)
    ax.set_xlabel("CPU latency / base (maps built in every run, 1 thread)")
    ax.set_ylabel("held-out mIoU (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the axes: never over a point
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def write_table(result: dict, path: Path) -> Path:
    """``table.md``: one row per method, the Pareto front marked, and how the figures were measured."""
    rows = result["rows"]
    front = set(pareto_front(rows))
    base = next(r for r in rows if r["method"] == "base")
    lines = [
        f"Measured {result['when']} on {result['machine']}; base: {result['base'].get('steps', '?')} steps, "
        f"held-out mIoU {base['miou']:.1f}. Latency: CPU time of a forward with maps built, interleaved with the "
        "base in the same run, median ratio. `*` = on the Pareto front.",
        "",
        "| method | mIoU | ΔmIoU | before fine-tune | latency × | params | MACs | peak MB | map entries × "
        "| voxels kept (stages 1-4) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        maps = f"{r['map_entries_ratio']:.2f}" if "map_entries_ratio" in r else ""
        pre = f"{r['miou_before_finetune']:.1f}" if "miou_before_finetune" in r else ""
        vox = f"{r['encoder_voxels_kept']:.2f}" if "encoder_voxels_kept" in r else ""
        lines.append(
            f"| {r['method']}{' *' if r['method'] in front else ''} | {r['miou']:.1f} | {r['miou'] - base['miou']:+.1f}"
            f" | {pre} | {r['latency_ratio']:.2f} | {r['parameters'] / 1e6:.3f} M | {r['macs'] / 1e9:.2f} G"
            f" | {r['peak_bytes'] / 2**20:.0f} | {maps} | {vox} |"
        )
    path.write_text("\n".join(lines) + "\n")
    return path


def random_mean(rows: list[dict], ratio: float) -> float:
    """Mean mIoU of the ``random-<seed>`` rows at ``ratio`` (NaN without any)."""
    vals = [r["miou"] for r in rows if r["ratio"] == ratio and r["method"].startswith("random-")]
    return statistics.mean(vals) if vals else float("nan")


def plot_criteria(result: dict, path: Path) -> Path:
    """One panel per ratio: mIoU before (light) and after (dark) the fixed fine-tune, per method."""
    ratios = sorted({r["ratio"] for r in result["rows"]})
    fig, axes = plt.subplots(len(ratios), 1, figsize=(12, 3.6 * len(ratios)), squeeze=False)
    for ax, ratio in zip(axes[:, 0], ratios):
        rows = sorted((r for r in result["rows"] if r["ratio"] == ratio), key=lambda r: -r["miou"])
        xs = range(len(rows))
        ax.bar([x - 0.2 for x in xs], [r["miou_before_finetune"] for r in rows], 0.4, color="#9ecae1",
               label="before fine-tune")  # fmt: skip
        ax.bar([x + 0.2 for x in xs], [r["miou"] for r in rows], 0.4, color="#08519c", label="after fine-tune")
        ax.axhline(result["base"]["miou"], color="k", ls="--", lw=1, label="unpruned")
        ax.axhline(random_mean(result["rows"], ratio), color="tab:red", ls=":", lw=1, label="random (mean)")
        ax.set_xticks(list(xs), [r["method"] for r in rows], rotation=40, ha="right", fontsize=8)
        ax.set_ylabel("held-out mIoU (%)")
        ax.set_title(f"{ratio:.0%} of the channels removed" if ratio else "no channels removed: 2:4 masks, the "
                     "unpruned net retrained from scratch")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, ncol=4, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _criteria_header(result: dict) -> list[str]:
    base, a, info = result["base"], result["args"], result.get("base_training", {})
    hist = info.get("history", [])
    peak = max((h["miou"] for h in hist), default=float("nan"))
    return [f"Measured {result['when']} on {result['machine']} (torch {result.get('torch', '?')}). Base: MinkUNet "
            f"cr {a['cr']} on synthetic scans at {a['voxel_size']} m, trained {info.get('steps', '?')} Adam steps "
            f"to a plateau ({'the stall rule ended it' if info.get('plateaued') else 'the round cap ended it'}: "
            f"best round {peak:.1f}), held-out mIoU {base['miou']:.1f}, {base['parameters'] / 1e6:.3f} M params, "
            f"{base['macs'] / 1e9:.3f} G MACs. Fine-tune: {a['finetune_steps']} steps for every method. Latency: "
            "CPU time of a forward with maps built in the call, interleaved with the base in one run (median "
            "ratio, about ±0.1 on this VM).", "",
            "`+ls`: least-squares refit of the layers that lost inputs, before the fine-tune. `extra steps`: "
            "training beyond the others' (training-based methods and searches; scratch: its whole training, so "
            "its 'before fine-tune' is after it). Methods that set widths themselves (L0, searches) may remove "
            "another fraction of the channels: compare MACs.", ""]  # fmt: skip


def write_criteria_table(result: dict, path: Path) -> Path:
    """``table.md``: per ratio, the methods by mIoU after the fine-tune, with the margin over random."""
    lines = _criteria_header(result)
    for ratio in sorted({r["ratio"] for r in result["rows"]}):
        rand = random_mean(result["rows"], ratio)
        lines += [f"### {ratio:.0%} of the channels" if ratio else "### No channels removed (2:4 masks; scratch: "
                  "the unpruned net retrained with the scratch recipe)", "",
                  "| method | mIoU before fine-tune | mIoU after | vs random | removed | params | MACs | latency × "
                  "| extra steps |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in sorted((r for r in result["rows"] if r["ratio"] == ratio), key=lambda r: -r["miou"]):
            margin = f"{r['miou'] - rand:+.1f}" if rand == rand else "n/a"  # NaN without random rows
            lines.append(f"| {r['method']} | {r['miou_before_finetune']:.1f} | {r['miou']:.1f} | {margin} "
                         f"| {r['removed']:.2f} | {r['parameters'] / 1e6:.3f} M | {r['macs'] / 1e9:.3f} G "
                         f"| {r['latency_ratio']:.2f} | {r['extra_steps']} |")  # fmt: skip
        lines.append("")
    path.write_text("\n".join(lines))
    return path
