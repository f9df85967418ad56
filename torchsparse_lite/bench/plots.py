"""PNG figures of a benchmark run (matplotlib, Agg backend, no display needed)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .compare import OK  # noqa: E402


@contextmanager
def saved_figure(path: Path, figsize: tuple[float, float], ncols: int = 1, dpi: int = 110) -> Iterator[tuple]:
    """``(fig, ax)`` (``ax`` an array when ``ncols > 1``) of a new figure, laid out, written to ``path`` as PNG
    and closed when the ``with`` block ends (closed without writing if it raises)."""
    fig, ax = plt.subplots(1, ncols, figsize=figsize)
    try:
        yield fig, ax
        fig.tight_layout()
        fig.savefig(path, dpi=dpi)
    finally:
        plt.close(fig)


def plot_peer_bars(values: dict[str, float], reference: str, path: Path, title: str, unit: str = "s") -> Path:
    """Horizontal bars of median times (``unit`` ``"s"`` or ``"ms"``), each labelled with its ratio to
    ``values[reference]`` (the peer's forward); bars whose name starts with ``"spconv"`` are the peer's."""
    names, ref = list(values), values[reference]
    with saved_figure(path, (8, 0.5 * len(names) + 1.2), dpi=120) as (_, ax):
        ax.barh(range(len(names)), [values[n] for n in names],
                color=["tab:orange" if n.startswith("spconv") else "tab:blue" for n in names])  # fmt: skip
        for i, n in enumerate(names):
            label = f" {values[n]:.2f} s" if unit == "s" else f" {values[n]:.0f} ms"
            ax.text(values[n], i, f"{label} ({values[n] / ref:.2f}x)", va="center", fontsize=8)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(f"median {'seconds' if unit == 's' else 'ms'} (in brackets: x {reference})")
        ax.set_xlim(0, max(values.values()) * 1.35)
        ax.set_title(title)
    return path


def plot_layers(records: list[dict], path: Path, pas: str = "fwd", dtype: str = "float32") -> Path | None:
    """Grouped bars: median time per layer (x) per implementation (bars), first workload of the run."""
    recs = [r for r in records if r["kind"] == "layer" and r.get("pass") == pas and r.get("dtype") == dtype
            and r.get("timing") and r["check"]["status"] == OK]
    if not recs:
        return None
    wl = (recs[0]["workload"], recs[0]["batch"])
    recs = [r for r in recs if (r["workload"], r["batch"]) == wl]
    layers = list(dict.fromkeys(r["layer"] for r in recs))
    impls = list(dict.fromkeys(r["impl"] for r in recs))
    table = {(r["layer"], r["impl"]): r["timing"] for r in recs}
    with saved_figure(path, (max(8, 0.9 * len(layers) + 3), 5)) as (_, ax):
        width = 0.8 / len(impls)
        x = np.arange(len(layers))
        for i, impl in enumerate(impls):
            med = [table.get((lay, impl), {}).get("median", np.nan) * 1e3 for lay in layers]
            err = [[(table[(lay, impl)]["median"] - table[(lay, impl)]["q1"]) * 1e3 if (lay, impl) in table else 0
                    for lay in layers],
                   [(table[(lay, impl)]["q3"] - table[(lay, impl)]["median"]) * 1e3 if (lay, impl) in table else 0
                    for lay in layers]]  # fmt: skip
            ax.bar(x + (i - (len(impls) - 1) / 2) * width, med, width, yerr=err, label=impl, capsize=2)
        ax.set_xticks(x, layers, rotation=40, ha="right", fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel(f"median time, ms ({pas}, {dtype}; bars: IQR)")
        ax.set_title(f"time per layer per strategy: {wl[0]} batch {wl[1]}")
        ax.legend(fontsize=7)
    return path


def plot_epsilon(sweeps: list[dict], path: Path) -> Path | None:
    """Padded-FLOP overhead of the adaptive plan versus epsilon, one line per layer."""
    if not sweeps:
        return None
    with saved_figure(path, (8, 5)) as (_, ax):
        for s in sweeps:
            ax.plot(s["epsilon"], np.asarray(s["overhead"]) * 100, marker=".", label=s["layer"])
        dense = max(s["dense"] for s in sweeps)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xlabel("adaptive grouping epsilon (allowed redundancy per group)")
        ax.set_ylabel("padded-FLOP overhead, % of real FLOPs")
        ax.set_title(f"padding overhead vs epsilon (dense grouping: up to {dense * 100:.0f}%)")
        ax.legend(fontsize=6, ncol=2)
    return path


def plot_scaling(scaling: dict, path: Path) -> Path | None:
    """Log-log time versus map entries with fitted power laws (exponents in the legend)."""
    pts = scaling.get("points") or []
    if len(pts) < 2:
        return None
    with saved_figure(path, (12, 5), ncols=2) as (fig, axes):
        series = defaultdict(list)
        for p in pts:
            for name in ("map_hash", "map_sort", "conv_fwd", "spconv_map", "spconv_fwd"):
                if name in p:
                    series[name].append((p["voxels"], p["map_entries"], p[name]["median"]))
        for name, rows in series.items():
            v, e, t = (np.asarray(c, dtype=float) for c in zip(*rows))
            fit = scaling["fits"].get(name)
            big = scaling["fits"].get(name + "_large")
            lab = f"{name} (b = {fit['exponent']:.2f}" + (f"; >= {scaling['large_from']:,} voxels: "
                                                          f"{big['exponent']:.2f})" if big else ")") if fit else name
            line = axes[0].loglog(e, t * 1e3, marker="o", label=lab)[0]
            if fit:
                xs = np.geomspace(e.min(), e.max(), 50)
                axes[0].loglog(xs, fit["coef"] * xs ** fit["exponent"] * 1e3, ls="--", color=line.get_color(), lw=0.8)
            fitv = scaling["fits"].get(name + "_vs_voxels")
            labv = f"{name} (b = {fitv['exponent']:.2f})" if fitv else name
            axes[1].loglog(v, t * 1e3, marker="o", label=labv, color=line.get_color())
        axes[0].set_xlabel("kernel-map entries (submanifold 3x3x3)")
        axes[1].set_xlabel("voxels (points after voxelization)")
        for ax in axes:
            ax.set_ylabel("median time, ms")
            ax.grid(True, which="both", lw=0.3)
            ax.legend(fontsize=7)
        fig.suptitle(f"cost vs size: {scaling['base']} subsets / copies ({scaling.get('layout', 'space')} layout), "
                     f"conv {scaling['channels']}->{scaling['channels']}; fit time = a * x^b")
    return path
