"""Bench harness: statistics on a fake clock, output checks, ratios, sweeps and fits."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from torchsparse_lite.bench.compare import OK, WRONG, align_rows, check_close
from torchsparse_lite.bench.memory import peak_memory
from torchsparse_lite.bench.report import add_ratios, format_summary, format_table
from torchsparse_lite.bench.sweeps import epsilon_sweep, power_law
from torchsparse_lite.bench.workloads import DATA_ENV, REAL_SCANS, Workload, batched, data_root, real_workloads, tiled
from torchsparse_lite.kmap import build_kernel_map
from torchsparse_lite.utils.timing import measure, measure_clocks, quantile, summarize


class FakeClock:
    """Returns 0, d0, d0, d0+d1, ... so that sample i lasts durations[i]."""

    def __init__(self, durations):
        self.ticks = itertools.chain.from_iterable((0.0, d) for d in durations)

    def __call__(self) -> float:
        return next(self.ticks)


@pytest.mark.parametrize(
    "durations, median, q1, q3",
    [
        ([5.0, 1.0, 3.0, 2.0, 4.0], 3.0, 2.0, 4.0),
        ([1.0, 2.0, 3.0, 4.0], 2.5, 1.75, 3.25),
        ([7.0], 7.0, 7.0, 7.0),
    ],
)
def test_measure_median_iqr_on_fake_clock(durations, median, q1, q3):
    calls = []
    t = measure(lambda: calls.append(1), warmup=2, reps=len(durations), clock=FakeClock(durations))
    assert len(calls) == 2 + len(durations)  # warm-up calls are made but not timed
    assert t.median == pytest.approx(median)
    assert (t.q1, t.q3) == (pytest.approx(q1), pytest.approx(q3))
    assert t.iqr == pytest.approx(q3 - q1)
    assert t.min == pytest.approx(min(durations))
    assert t.samples == tuple(durations)


def test_measure_clocks_times_every_clock_and_keeps_setup_untimed():
    made, seen = [], []

    def setup():
        made.append(len(made))
        return made[-1]

    wall, cpu = measure_clocks(seen.append, setup=setup, warmup=1, reps=3,
                               clocks=(FakeClock([1.0, 2.0, 3.0]), FakeClock([0.5, 0.5, 0.25])))  # fmt: skip
    assert seen == made == [0, 1, 2, 3]  # a fresh argument for every call, warm-up included
    assert (wall.median, wall.min, cpu.median, cpu.min) == (2.0, 1.0, 0.5, 0.25)
    with pytest.raises(ValueError, match="clocks"):
        measure_clocks(seen.append, clocks=())


@pytest.mark.parametrize("n", [1, 2, 5, 10, 11])
def test_quantiles_match_numpy(n):
    vals = sorted(np.random.default_rng(n).uniform(size=n).tolist())
    for q in (0.0, 0.25, 0.5, 0.75, 1.0):
        assert quantile(vals, q) == pytest.approx(float(np.quantile(vals, q)))


def test_summarize_and_measure_reject_bad_input():
    with pytest.raises(ValueError, match="empty"):
        summarize([])
    with pytest.raises(ValueError, match="reps"):
        measure(lambda: None, reps=0)


def test_check_close_flags_wrong_and_aligns_rows():
    g = torch.Generator().manual_seed(0)
    coords = torch.unique(torch.randint(0, 20, (50, 4), generator=g), dim=0).int()
    ref = torch.randn(coords.shape[0], 3, generator=g)
    perm = torch.randperm(coords.shape[0], generator=g)
    assert torch.equal(coords[perm][align_rows(coords, coords[perm])], coords)
    ok = check_close(ref[perm], ref, out_coords=coords[perm], ref_coords=coords)
    assert ok.status == OK and ok.max_abs_err == 0.0
    bad = ref.clone()
    bad[3, 1] += 0.5
    assert check_close(bad, ref).status == WRONG
    assert check_close(ref[:-1], ref, out_coords=coords[:-1], ref_coords=coords).status == WRONG
    assert check_close(ref.clone().fill_(float("nan")), ref).status == WRONG


def _rec(impl, median, status=OK, kind="layer"):
    return {"kind": kind, "workload": "w", "batch": 1, "layer": "L", "dtype": "float32", "pass": "fwd",
            "impl": impl, "check": {"status": status, "note": ""},
            "timing": {"median": median, "q1": median, "q3": median, "iqr": 0.0, "min": median, "samples": []}}


def test_ratios_are_pairwise_and_skip_wrong_results():
    recs = add_ratios([_rec("ours-torch-separate", 2.0), _rec("ours-torch-dense", 1.0), _rec("spconv", 4.0)])
    assert recs[1]["vs_baseline"] == pytest.approx(0.5)
    assert recs[1]["vs_spconv"] == pytest.approx(0.25)
    assert recs[2]["vs_spconv"] is None
    recs = add_ratios([_rec("ours-torch-separate", 2.0), _rec("spconv", 4.0, status=WRONG)])
    assert recs[0]["vs_spconv"] is None  # a wrong peer gives no ratio
    text = format_table(recs)
    assert "wrong" in text and "ours-torch-separate" in text
    assert "| w b1 | L |" in format_summary(recs)


def test_power_law_recovers_exponent():
    x = np.geomspace(1e4, 1e6, 6)
    fit = power_law(x, 3e-7 * x**1.05)
    assert fit["exponent"] == pytest.approx(1.05, abs=1e-6)
    assert fit["r2"] == pytest.approx(1.0)


def test_epsilon_sweep_overhead_bounds():
    g = torch.Generator().manual_seed(0)
    coords = torch.unique(torch.randint(0, 12, (400, 3), generator=g), dim=0)
    coords = torch.cat([torch.zeros_like(coords[:, :1]), coords], 1).int()
    km = build_kernel_map(coords, (3, 3, 3))
    s = epsilon_sweep(km, 8, 8, epsilons=(0.0, 0.3, 0.6))
    assert s["separate"] == 0.0 and s["overhead"][0] == pytest.approx(0.0)
    assert all(0.0 <= o <= s["dense"] + 1e-9 for o in s["overhead"])


def test_tiling_and_batching_shapes():
    c = torch.unique(torch.randint(0, 30, (500, 3)), dim=0)
    w = Workload("t", torch.cat([torch.zeros_like(c[:, :1]), c], 1).int(), "synthetic")
    big, small = tiled(w, 3 * w.n + 7), tiled(w, 100)
    assert big.n == 3 * w.n + 7 and small.n == 100
    for t in (big, small):
        assert torch.unique(t.coords, dim=0).shape[0] == t.n  # still unique
    b = batched(w, 4)
    assert b.n == 4 * w.n and b.batch_size == 4


def test_real_workloads_come_from_the_given_data_folder(tmp_path, monkeypatch):
    """Real scans are read from ``root`` or ``$TORCHSPARSE_LITE_DATA``, never from a path outside the package."""
    monkeypatch.delenv(DATA_ENV, raising=False)
    assert data_root() is None and real_workloads() == []  # no folder: nothing, no guessing
    rel, width, vs = REAL_SCANS["kitti_0.05"]
    scan = tmp_path / rel
    scan.parent.mkdir(parents=True)
    (np.random.default_rng(0).uniform(0, 5, (500, width))).astype(np.float32).tofile(scan)
    got = real_workloads(["kitti_0.05", "nuscenes_0.1"], root=tmp_path)  # the absent nuScenes sweep is skipped
    assert [(w.name, w.source, w.voxel_size, w.n_points) for w in got] == [("kitti_0.05", "real", vs, 500)]
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert data_root() == tmp_path and [w.name for w in real_workloads(["kitti_0.05"])] == ["kitti_0.05"]
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "absent"))
    assert real_workloads() == []
    with pytest.raises(ValueError, match="root"):
        data_root(tmp_path / "absent")
    with pytest.raises(ValueError, match="unknown real workload"):
        real_workloads(["semantickitti_9"], root=tmp_path)


def test_cpu_peak_memory_replays_allocations():
    def fn():
        a = torch.ones(1000, 1000)  # 4 MB
        b = a * 2  # 4 MB: 8 MB live
        del a
        c = b + 1  # a was freed: still 8 MB live
        return c

    peak, method = peak_memory(fn, "cpu")
    assert method == "cpu_profiler_peak_tensor_bytes"
    assert 8_000_000 <= peak < 8_100_000
