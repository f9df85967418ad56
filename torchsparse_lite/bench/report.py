"""Pairwise ratios, console tables and the JSON file of a benchmark run."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from .compare import OK

BASELINE = {"layer": "ours-torch-separate", "map": "ours-hash", "network": "ours-torch-separate"}


def _key(r: dict) -> tuple:
    return (r["kind"], r["workload"], r["batch"], r.get("layer", ""), r.get("dtype", ""), r.get("pass", ""))


def _median(r: dict) -> float | None:
    t = r.get("timing")
    ok = r.get("check", {}).get("status") == OK
    return t["median"] if (t and ok) else None


def add_ratios(records: list[dict]) -> list[dict]:
    """Set ``vs_baseline`` (time / ours' baseline) and ``vs_spconv`` (time / spconv) on records.

    Ratios pair records of the same kind, workload, batch, layer, dtype and
    pass from the same run; a side without a correct, timed result gives None.
    """
    groups: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for r in records:
        groups[_key(r)][r["impl"]] = r
    for r in records:
        g = groups[_key(r)]
        me = _median(r)
        base = g.get(BASELINE.get(r["kind"], ""))
        peer = g.get("spconv")
        b = _median(base) if base else None
        p = _median(peer) if peer else None
        r["vs_baseline"] = me / b if (me is not None and b) else None
        r["vs_spconv"] = me / p if (me is not None and p and r["impl"] != "spconv") else None
    return records


def _fmt(v: float | None, scale: float = 1e3, width: int = 9, digits: int = 2) -> str:
    return f"{v * scale:{width}.{digits}f}" if v is not None else f"{'-':>{width}}"


def format_table(records: list[dict]) -> str:
    """Every record as one markdown row: median, IQR, peak memory, check, ratios."""
    head = ("| workload | layer | pass | impl | median ms | IQR ms | peak MB | check | x baseline | / spconv |\n"
            "|---|---|---|---|---:|---:|---:|---|---:|---:|")
    lines = [head]
    for r in records:
        t = r.get("timing") or {}
        mem = r.get("peak_mem_bytes")
        chk = r.get("check", {})
        status = chk.get("status", "-") + (" (" + chk["note"][:60] + ")" if chk.get("status") != OK and chk.get("note")
                                          else "")
        lines.append(
            f"| {r['workload']} b{r['batch']} | {r.get('layer', '')} | {r.get('pass', '')} | {r['impl']} | "
            f"{_fmt(t.get('median'))} | {_fmt(t.get('iqr'))} | {_fmt(mem, 1 / 2**20, 7, 1)} | {status} | "
            f"{_fmt(r.get('vs_baseline'), 1, 6)} | {_fmt(r.get('vs_spconv'), 1, 6)} |"
        )
    return "\n".join(lines)


def format_summary(records: list[dict]) -> str:
    """One row per (workload, layer, pass): ours' maps and convs next to spconv, with ratios ours/spconv."""
    by: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for r in records:
        if r["kind"] in ("layer", "map"):
            by[(r["workload"], r["batch"], r.get("layer", ""))][f"{r['kind']}:{r['impl']}:{r.get('pass')}"] = r
    lines = ["| workload | layer | map hash / sort / spconv ms | ours/spconv map (best) | fwd separate / best "
             "(strategy) / spconv ms | ours/spconv fwd (best) | fwd+bwd separate / best ms |",
             "|---|---|---|---:|---|---:|---|"]
    for (wl, b, layer), g in by.items():
        mh, ms, mp = (_median(g.get(f"map:{i}:map", {})) for i in ("ours-hash", "ours-sort", "spconv"))
        best_map = min([v for v in (mh, ms) if v is not None], default=None)
        fwd = {k.split(":")[1]: _median(r) for k, r in g.items() if k.startswith("layer:ours-") and k.endswith(":fwd")}
        fwd = {k: v for k, v in fwd.items() if v is not None}
        fb = {k.split(":")[1]: _median(r) for k, r in g.items() if k.startswith("layer:ours-") and
              k.endswith(":fwdbwd")}
        fb = {k: v for k, v in fb.items() if v is not None}
        sp = g.get("layer:spconv:fwd")
        spt = _median(sp) if sp else None
        sp_txt = _fmt(spt, width=1, digits=1).strip() if sp is None or spt is not None else sp["check"]["status"]
        best = min(fwd.items(), key=lambda kv: kv[1]) if fwd else None
        best_fb = min(fb.values()) if fb else None
        sep = fwd.get("ours-torch-separate")
        r_map = f"{best_map / mp:.2f}" if (best_map and mp) else "-"
        r_fwd = f"{best[1] / spt:.2f}" if (best and spt) else "-"
        m_txt = " / ".join(_fmt(v, width=1, digits=1).strip() for v in (mh, ms)) + " / " + (
            _fmt(mp, width=1, digits=1).strip() if mp is not None or "map:spconv:map" not in g
            else g["map:spconv:map"]["check"]["status"])
        f_txt = (f"{_fmt(sep, width=1, digits=1).strip()} / "
                 f"{_fmt(best[1] if best else None, width=1, digits=1).strip()} "
                 f"({best[0].split('-')[-1] if best else '-'}) / {sp_txt}")
        fb_txt = f"{_fmt(fb.get('ours-torch-separate'), width=1, digits=1).strip()} / " \
                 f"{_fmt(best_fb, width=1, digits=1).strip()}"
        lines.append(f"| {wl} b{b} | {layer} | {m_txt} | {r_map} | {f_txt} | {r_fwd} | {fb_txt} |")
    return "\n".join(lines)


def write_json(path: Path, payload: dict) -> Path:
    """Write ``payload`` as indented JSON (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1, default=str))
    return path
