"""Compare synthetic scans with a real one: point count, range and elevation profiles, voxel counts.

Run ``python -m torchsparse_lite.datasets.synthetic.compare --real ../shared/data/semantickitti/000000.bin
--out runs/synthetic_vs_real``; it writes ``stats.json`` and ``synthetic_vs_real.png``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after selecting the backend
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from ..kitti import load_kitti_bin  # noqa: E402
from .scan import generate_scan  # noqa: E402

RANGE_EDGES = (0.0, 5.0, 10.0, 20.0, 40.0, 80.0, 1e9)
ELEVATION_EDGES = tuple(float(e) for e in np.arange(-26.0, 4.5, 1.0))


def scan_statistics(points: np.ndarray, voxel_sizes: Sequence[float] = (0.05, 0.1, 0.2)) -> dict[str, Any]:
    """Sparsity profile of one scan.

    Args:
        points: [N, >=3] float points, sensor at the origin.
        voxel_sizes: voxel edges at which to count occupied voxels.

    Returns:
        JSON-ready dict: ``num_points``, ``range_fraction`` (share of points
        per horizontal-range bin of ``RANGE_EDGES``), ``elevation_fraction``
        (per 1-degree bin of ``ELEVATION_EDGES``), ``median_range``,
        ``voxels`` (occupied voxels per voxel size), ``points_per_voxel``.
    """
    xyz = np.asarray(points)[:, :3].astype(np.float64)
    rng_xy = np.hypot(xyz[:, 0], xyz[:, 1])
    el = np.degrees(np.arctan2(xyz[:, 2], rng_xy))
    n = xyz.shape[0]
    voxels = {}
    for vs in voxel_sizes:
        g = np.floor(xyz / vs).astype(np.int64)
        g -= g.min(0)
        voxels[str(vs)] = int(np.unique((g[:, 0] << 42) | (g[:, 1] << 21) | g[:, 2]).size)
    return {
        "num_points": n,
        "median_range": float(np.median(rng_xy)),
        "range_fraction": (np.histogram(rng_xy, RANGE_EDGES)[0] / n).round(4).tolist(),
        "elevation_fraction": (np.histogram(el, ELEVATION_EDGES)[0] / n).round(4).tolist(),
        "voxels": voxels,
        "points_per_voxel": {k: round(n / v, 3) for k, v in voxels.items()},
    }


def compare_with_real(
    real_path: str | Path, seeds: Sequence[int], out_dir: str | Path, **scan_kwargs: Any
) -> dict[str, Any]:
    """Statistics of ``generate_scan(seed)`` for ``seeds`` next to those of a real KITTI-format scan.

    Writes ``stats.json`` and ``synthetic_vs_real.png`` into ``out_dir`` and returns the JSON dict.
    """
    if not seeds:
        raise ValueError("seeds must name at least one synthetic scan")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    real = load_kitti_bin(real_path)
    scans = [generate_scan(int(s), **scan_kwargs) for s in tqdm(seeds, desc="synthetic scans", leave=False)]
    synth = [scan_statistics(s.points) for s in scans]
    report = {"real_file": str(real_path), "real": scan_statistics(real), "seeds": list(map(int, seeds))}
    report["synthetic"] = synth
    report["synthetic_mean"] = {
        "num_points": float(np.mean([s["num_points"] for s in synth])),
        "median_range": float(np.mean([s["median_range"] for s in synth])),
        "range_fraction": np.mean([s["range_fraction"] for s in synth], axis=0).round(4).tolist(),
    }
    (out / "stats.json").write_text(json.dumps(report, indent=2))
    _plot(report, scans[0].points, scans[0].labels, real, out / "synthetic_vs_real.png")
    return report


def _plot(report: dict[str, Any], points: np.ndarray, labels: np.ndarray, real: np.ndarray, path: Path) -> None:
    fig, ax = plt.subplots(2, 2, figsize=(13, 11))
    names = [f"{int(a)}-{int(b) if b < 1e8 else 'inf'}" for a, b in zip(RANGE_EDGES[:-1], RANGE_EDGES[1:])]
    x = np.arange(len(names))
    ax[0, 0].bar(x - 0.2, report["real"]["range_fraction"], 0.4, label="real")
    ax[0, 0].bar(x + 0.2, report["synthetic_mean"]["range_fraction"], 0.4, label="synthetic (mean)")
    ax[0, 0].set_xticks(x, names)
    ax[0, 0].set(xlabel="horizontal range (m)", ylabel="share of points", title="points by range")
    ax[0, 0].legend()
    centres = np.asarray(ELEVATION_EDGES[:-1]) + 0.5
    ax[0, 1].plot(centres, report["real"]["elevation_fraction"], label="real")
    for i, s in enumerate(report["synthetic"]):
        ax[0, 1].plot(centres, s["elevation_fraction"], alpha=0.6, label=f"synthetic seed {report['seeds'][i]}")
    ax[0, 1].set(xlabel="elevation (deg)", ylabel="share of points", title="points by elevation (1 deg bins)")
    ax[0, 1].legend(fontsize=7)
    for a, pts, col, title, cmap, lim in (
        (ax[1, 0], points, labels.astype(np.float64), f"synthetic seed {report['seeds'][0]} (colour = class)", "tab10",
         {"vmin": 0, "vmax": 9}),
        (ax[1, 1], real, real[:, 2].astype(np.float64), "real scan (colour = height)", "viridis", {}),
    ):  # fmt: skip
        a.imshow(_bev(pts, col), origin="lower", extent=(-40, 40, -40, 40), cmap=cmap, interpolation="nearest", **lim)
        a.set(title=title, xlabel="x (m)", ylabel="y (m)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _bev(points: np.ndarray, values: np.ndarray, half: float = 40.0, cell: float = 0.1) -> np.ndarray:
    """Bird's-eye raster [H, W] of the largest ``values`` per cell (NaN where empty), drawn fast with imshow."""
    n = int(round(2 * half / cell))
    ix = np.floor((points[:, 0] + half) / cell).astype(np.int64)
    iy = np.floor((points[:, 1] + half) / cell).astype(np.int64)
    ok = (ix >= 0) & (ix < n) & (iy >= 0) & (iy < n)
    img = np.full(n * n, -np.inf)
    np.maximum.at(img, iy[ok] * n + ix[ok], values[ok])
    img[np.isinf(img)] = np.nan
    return img.reshape(n, n)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", required=True, help="KITTI-format .bin scan (x, y, z, intensity float32)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--out", default="runs/synthetic_vs_real")
    args = parser.parse_args(argv)
    report = compare_with_real(args.real, args.seeds, args.out)
    print(json.dumps({"real": report["real"]["num_points"], "synthetic_mean": report["synthetic_mean"]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
