"""Training, evaluation and checkpoints of the detector (used by the ``detect`` command and the tests)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .config import DetectorConfig
from .data import DetectionSample, augment_sample
from .metrics import evaluate
from .model import CenterPointDetector


def lr_factor(progress: float, warmup: float = 0.05) -> float:
    """Linear warm-up then cosine decay to 1 % of the peak; ``progress`` in [0, 1]."""
    if progress < warmup:
        return 0.1 + 0.9 * progress / warmup
    p = min(1.0, (progress - warmup) / max(1e-9, 1 - warmup))
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * p))


def save_checkpoint(path: str | Path, model: CenterPointDetector, optimizer, state: dict) -> None:
    """Write model, optimizer and loop state (epoch, step, history, elapsed) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "config": model.cfg.to_dict(),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            **state,
        },
        tmp,
    )
    tmp.replace(path)


def load_detector(path: str | Path, device: str = "cpu") -> tuple[CenterPointDetector, dict]:
    """Rebuild a detector from a checkpoint; returns (model in eval mode, checkpoint dict)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {p} does not exist; train one with `detect train --out DIR`")
    ckpt = torch.load(p, map_location=device, weights_only=False)
    model = CenterPointDetector(DetectorConfig.from_dict(ckpt["config"])).to(device)
    model.load_state_dict(ckpt["model"])
    model.eval()
    return model, ckpt


def train_detector(
    model: CenterPointDetector,
    samples: Sequence[DetectionSample],
    *,
    epochs: int,
    batch_size: int = 1,
    lr: float = 3e-3,
    weight_decay: float = 1e-2,
    augment: Callable | None = None,
    seed: int = 0,
    time_budget: float | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    bn_batches: int = 8,
) -> dict:
    """Train with AdamW, warm-up + cosine LR and gradient clipping.

    Args:
        model: the detector (trained in place).
        samples: training scenes.
        epochs: passes over ``samples`` (shuffled per epoch, seeded by ``seed`` and the epoch).
        batch_size: scenes per step.
        lr, weight_decay: AdamW settings; the LR schedule follows the larger of
            step / total steps and elapsed / ``time_budget``.
        augment: a ``datasets.augment`` transform applied to points and boxes; None trains on
            the scenes as they are and then reuses each scene's voxels and kernel maps.
        time_budget: stop after this many seconds of training (checkpointing first).
        checkpoint: file written after every epoch and at the end; with ``resume`` it is loaded first.
        bn_batches: scenes of the final :func:`precise_bn` pass (0: keep the running averages).

    Returns:
        {"history": [{"step", "epoch", "total", "heatmap", "regression", "lr"}], "epochs_done",
        "steps", "train_seconds" (wall), "train_cpu_seconds" (this process's CPU time), "stopped_by"}.
    """
    if not samples:
        raise ValueError("samples is empty: pass at least one training scene")
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    state = {"epoch": 0, "step": 0, "history": [], "elapsed": 0.0, "cpu": 0.0}
    if resume and checkpoint is not None and Path(checkpoint).is_file():
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
        model.load_state_dict(ckpt["model"])
        if ckpt.get("optimizer") is not None:
            opt.load_state_dict(ckpt["optimizer"])
        state = {k: ckpt.get(k, v) for k, v in state.items()}
    steps_per_epoch = math.ceil(len(samples) / batch_size)
    total = epochs * steps_per_epoch
    cache: dict[int, object] = {}
    device = next(model.parameters()).device
    stopped = "epochs"
    start = time.perf_counter() - state["elapsed"]
    cpu_start = time.process_time() - state["cpu"]
    model.train()
    bar = tqdm(total=total, initial=state["step"], desc="train", disable=not progress)
    for epoch in range(state["epoch"], epochs):
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(len(samples))
        for b0 in range(0, len(order), batch_size):
            elapsed = time.perf_counter() - start
            if time_budget is not None and elapsed >= time_budget:
                stopped = "time_budget"
                break
            frac = state["step"] / total
            if time_budget is not None:
                frac = max(frac, elapsed / time_budget)
            for group in opt.param_groups:
                group["lr"] = lr * lr_factor(frac)
            idx = [int(i) for i in order[b0 : b0 + batch_size]]
            batch = [augment_sample(samples[i], augment, rng) if augment else samples[i] for i in idx]
            boxes = [torch.from_numpy(s.boxes).float() for s in batch]
            labels = [torch.from_numpy(s.labels).long() for s in batch]
            if augment is None and batch_size == 1:
                if idx[0] not in cache:
                    cache[idx[0]] = model.voxelize([torch.from_numpy(batch[0].points)])
                scans = cache[idx[0]]
            else:
                scans = [torch.from_numpy(s.points).to(device) for s in batch]
            loss, parts = model.loss(scans, boxes, labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            state["step"] += 1
            rec = {
                "step": state["step"],
                "epoch": epoch,
                "total": float(loss.detach()),
                **parts,
                "lr": opt.param_groups[0]["lr"],
            }
            state["history"].append(rec)
            bar.update(1)
            bar.set_postfix(loss=f"{rec['total']:.3f}", hm=f"{parts['heatmap']:.3f}")
        else:
            state["epoch"] = epoch + 1
        state["elapsed"] = time.perf_counter() - start
        state["cpu"] = time.process_time() - cpu_start
        if checkpoint is not None:
            save_checkpoint(checkpoint, model, opt, state)
        if stopped == "time_budget":
            break
    bar.close()
    if bn_batches:
        rng = np.random.default_rng([seed, 7919])
        picks = rng.permutation(len(samples))[:bn_batches]
        scans = [cache[int(i)] if int(i) in cache else [torch.from_numpy(samples[int(i)].points)] for i in picks]
        precise_bn(model, scans)
        if checkpoint is not None:
            save_checkpoint(checkpoint, model, opt, state)
    model.eval()
    return {
        "history": state["history"],
        "epochs_done": state["epoch"],
        "steps": state["step"],
        "train_seconds": state["elapsed"],
        "train_cpu_seconds": state["cpu"],
        "stopped_by": stopped,
    }


@torch.no_grad()
def precise_bn(model: CenterPointDetector, scans: Sequence, batches: int | None = None) -> None:
    """Recompute every BatchNorm's running statistics as exact averages over ``scans`` ("precise BN").

    The running averages kept during training lag behind fast-changing weights
    (short runs, single-scene overfitting); this pass makes evaluation-mode
    statistics match the final weights.

    Args:
        model: the detector.
        scans: inputs accepted by ``model.forward`` (point lists or cached voxel tensors), one per batch.
        batches: use only the first ``batches`` of them.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms or not scans:
        return
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average = exact mean over the passes
    was_training = model.training
    model.train()
    for x in list(scans)[:batches]:
        model(x)
    for m, mom in zip(norms, saved):
        m.momentum = mom
    model.train(was_training)


@torch.no_grad()
def evaluate_detector(
    model: CenterPointDetector, samples: Sequence[DetectionSample], progress: bool = True
) -> tuple[dict, list[torch.Tensor]]:
    """Detections and KITTI-style AP (BEV and 3D, R40) of ``model`` on ``samples``.

    Returns:
        (metrics from :func:`.metrics.evaluate` plus "scenes" and "seconds_per_scene", detections per scene).
    """
    model.eval()
    dets, gts = [], []
    t0 = time.perf_counter()
    for s in tqdm(samples, desc="eval", disable=not progress, leave=False):
        dets.append(model.predict([torch.from_numpy(s.points)])[0])
        gts.append((torch.from_numpy(s.boxes), torch.from_numpy(s.labels)))
    seconds = (time.perf_counter() - t0) / max(1, len(samples))
    metrics = evaluate(dets, gts, model.cfg.classes)
    return {"ap": metrics, "scenes": len(samples), "seconds_per_scene": seconds}, dets
