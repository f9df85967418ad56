"""Output checks: align rows by coordinates, compare with a tolerance, name the verdict."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..kmap.keys import pack

OK, WRONG, ERROR, SKIPPED = "ok", "wrong", "error", "skipped"


@dataclass(frozen=True)
class Check:
    """Verdict of one output check.

    Attributes:
        status: ``"ok"``, ``"wrong"``, ``"error"`` or ``"skipped"``.
        max_abs_err: largest absolute difference to the reference (None if not compared).
        tol: the absolute tolerance used (``atol + rtol * max|ref|``).
        note: why it is wrong / skipped / errored.
    """

    status: str
    max_abs_err: float | None = None
    tol: float | None = None
    note: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def align_rows(ref_coords: torch.Tensor, coords: torch.Tensor) -> torch.Tensor | None:
    """Permutation ``p`` with ``coords[p] == ref_coords`` row for row, or None if the sets differ.

    Args:
        ref_coords, coords: [N, 4] integer (batch, x, y, z), unique rows.
    """
    if ref_coords.shape != coords.shape:
        return None
    a, b = pack(ref_coords.to(torch.int64)), pack(coords.to(torch.int64))
    sa, ia = torch.sort(a)
    sb, ib = torch.sort(b)
    if not torch.equal(sa, sb):
        return None
    perm = torch.empty_like(ia)
    perm[ia] = ib
    return perm


def check_close(
    out: torch.Tensor,
    ref: torch.Tensor,
    *,
    rtol: float = 1e-4,
    atol: float = 1e-4,
    out_coords: torch.Tensor | None = None,
    ref_coords: torch.Tensor | None = None,
) -> Check:
    """Compare ``out`` [N, C] against ``ref`` [N, C] (rows aligned by coords when both are given).

    The tolerance scales with the reference: ``atol + rtol * max|ref|``.
    """
    out, ref = out.detach().float().cpu(), ref.detach().float().cpu()
    if out_coords is not None and ref_coords is not None:
        perm = align_rows(ref_coords.cpu(), out_coords.cpu())
        if perm is None:
            return Check(WRONG, note=f"output coordinates differ ({out_coords.shape[0]} vs {ref_coords.shape[0]} rows)")
        out = out[perm]
    if out.shape != ref.shape:
        return Check(WRONG, note=f"shape {list(out.shape)} vs reference {list(ref.shape)}")
    tol = atol + rtol * (float(ref.abs().max()) if ref.numel() else 0.0)
    if not bool(torch.isfinite(out).all()):
        return Check(WRONG, tol=tol, note="non-finite values in output")
    err = float((out - ref).abs().max()) if ref.numel() else 0.0
    if err > tol:
        return Check(WRONG, err, tol, note=f"max |err| {err:.3g} > tol {tol:.3g}")
    return Check(OK, err, tol)
