"""Figures of the pruning study: the latency-vs-mIoU Pareto plot and the Markdown table."""

from __future__ import annotations

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


def plot_pareto(rows: list[dict], path: Path) -> Path:
    """Scatter of CPU latency ratio (maps included) vs held-out mIoU, the Pareto front joined by a line."""
    fig, ax = plt.subplots(figsize=(8, 5.5))
    families = sorted({_family(r["method"]) for r in rows})
    colours = dict(zip(families, plt.cm.tab10.colors))
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
    ax.set_title("Pruning a converged MinkUNet: latency vs accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
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
