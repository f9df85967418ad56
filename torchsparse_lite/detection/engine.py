"""Training, evaluation and checkpoints of the detector (used by the ``detect`` command and the tests)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..train.checkpoint import load_checkpoint, load_model, restore
from ..train.checkpoint import save_checkpoint as write_checkpoint
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


def detector_data(cfg: DetectorConfig) -> dict:
    """The data settings a detector checkpoint records (informational: the config holds them too)."""
    return {"voxel_size": list(cfg.voxel_size), "point_range": list(cfg.point_range), "class_names": list(cfg.classes)}


def save_checkpoint(path: str | Path, model: CenterPointDetector, optimizer, state: dict) -> None:
    """Write model (with its structure, so a pruned detector loads), optimizer and loop state atomically.

    ``state``: epoch, step, history, elapsed, cpu. The format is :mod:`torchsparse_lite.train.checkpoint`'s.
    """
    opt = optimizer.state_dict() if optimizer is not None else None
    write_checkpoint(path, model, detector_data(model.cfg), task="detection", model_config=model.cfg.to_dict(),
                     optimizer=opt, **state)  # fmt: skip


def build_detector(config: dict) -> CenterPointDetector:
    """The (unpruned) detector of a checkpoint's model config."""
    return CenterPointDetector(DetectorConfig.from_dict(config))


def load_detector(path: str | Path, device: str = "cpu") -> tuple[CenterPointDetector, dict]:
    """Rebuild a detector (pruned ones too) from a checkpoint; returns (model in eval mode, checkpoint dict)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; train one with `detect train --out DIR`")
    return load_model(path, device, task="detection", build=build_detector)


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
    for name, value, low in (("epochs", epochs, 1), ("batch_size", batch_size, 1), ("bn_batches", bn_batches, 0)):
        if value < low:
            raise ValueError(f"{name} must be >= {low}, got {value}")
    if time_budget is not None and not time_budget >= 0:
        raise ValueError(f"time_budget must be >= 0 seconds or None, got {time_budget}")
    opt, state = _start(model, lr, weight_decay, checkpoint if resume else None)
    loop = _TrainLoop(model, opt, samples, epochs, batch_size, lr, augment, seed, time_budget, state)
    stopped = loop.run(checkpoint, progress)
    if bn_batches:
        precise_bn(model, _bn_scans(samples, loop.cache, seed, bn_batches))
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


def _start(
    model: CenterPointDetector, lr: float, weight_decay: float, checkpoint: str | Path | None
) -> tuple[torch.optim.Optimizer, dict]:
    """AdamW and the loop state ``{epoch, step, history, elapsed, cpu}``: fresh, or restored from ``checkpoint``.

    The checkpoint's structure and weights go into ``model`` before the optimizer is made, so that
    a pruned detector's optimizer holds its (smaller) parameters.
    """
    state = {"epoch": 0, "step": 0, "history": [], "elapsed": 0.0, "cpu": 0.0}
    ckpt = None
    if checkpoint is not None and Path(checkpoint).is_file():
        ckpt = load_checkpoint(checkpoint, task="detection")
        restore(model, ckpt)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    if ckpt is None:
        return opt, state
    if ckpt.get("optimizer") is not None:
        opt.load_state_dict(ckpt["optimizer"])
    return opt, {k: ckpt.get(k, v) for k, v in state.items()}


def _bn_scans(samples: Sequence[DetectionSample], cache: dict, seed: int, count: int) -> list:
    """``count`` seeded scenes for :func:`precise_bn`: cached voxels where training made them, else points."""
    picks = np.random.default_rng([seed, 7919]).permutation(len(samples))[:count]
    return [cache[int(i)] if int(i) in cache else [torch.from_numpy(samples[int(i)].points)] for i in picks]


@dataclass
class _TrainLoop:
    """The epochs of :func:`train_detector`: shuffling, LR schedule, steps, time budget, checkpoints."""

    model: CenterPointDetector
    opt: torch.optim.Optimizer
    samples: Sequence[DetectionSample]
    epochs: int
    batch_size: int
    lr: float
    augment: Callable | None
    seed: int
    time_budget: float | None
    state: dict
    cache: dict[int, object] = field(default_factory=dict)
    total: int = field(init=False, default=0)
    start: float = field(init=False, default=0.0)
    bar: tqdm | None = field(init=False, default=None)

    def run(self, checkpoint: str | Path | None, progress: bool) -> str:
        """Train the remaining epochs; returns what stopped training: ``"epochs"`` or ``"time_budget"``."""
        state = self.state
        self.total = self.epochs * math.ceil(len(self.samples) / self.batch_size)
        self.start = time.perf_counter() - state["elapsed"]
        cpu_start = time.process_time() - state["cpu"]
        self.model.train()
        self.bar = tqdm(total=self.total, initial=state["step"], desc="train", disable=not progress)
        stopped = "epochs"
        for epoch in range(state["epoch"], self.epochs):
            finished = self.run_epoch(epoch)
            state["elapsed"] = time.perf_counter() - self.start
            state["cpu"] = time.process_time() - cpu_start
            if checkpoint is not None:
                save_checkpoint(checkpoint, self.model, self.opt, state)
            if not finished:
                stopped = "time_budget"
                break
        self.bar.close()
        return stopped

    def run_epoch(self, epoch: int) -> bool:
        """One shuffled pass; False when the time budget ran out first (the epoch then stays unfinished)."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.samples))
        for b0 in range(0, len(order), self.batch_size):
            elapsed = time.perf_counter() - self.start
            if self.time_budget is not None and elapsed >= self.time_budget:
                return False
            frac = self.state["step"] / self.total
            if self.time_budget is not None:
                frac = max(frac, elapsed / self.time_budget)
            for group in self.opt.param_groups:
                group["lr"] = self.lr * lr_factor(frac)
            self.step(epoch, [int(i) for i in order[b0 : b0 + self.batch_size]], rng)
        self.state["epoch"] = epoch + 1
        return True

    def step(self, epoch: int, idx: list[int], rng: np.random.Generator) -> None:
        """One optimizer step on the scenes ``idx`` (augmented with ``rng``), logged to the history."""
        batch = [augment_sample(self.samples[i], self.augment, rng) if self.augment else self.samples[i] for i in idx]
        boxes = [torch.from_numpy(s.boxes).float() for s in batch]
        labels = [torch.from_numpy(s.labels).long() for s in batch]
        loss, parts = self.model.loss(self.inputs(idx, batch), boxes, labels)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 10.0)
        self.opt.step()
        self.state["step"] += 1
        rec = {"step": self.state["step"], "epoch": epoch, "total": float(loss.detach()), **parts,
               "lr": self.opt.param_groups[0]["lr"]}  # fmt: skip
        self.state["history"].append(rec)
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{rec['total']:.3f}", hm=f"{parts['heatmap']:.3f}")

    def inputs(self, idx: list[int], batch: list[DetectionSample]) -> object:
        """The model input: cached voxels of an unaugmented single scene, else the points on the model's device."""
        if self.augment is None and self.batch_size == 1:
            if idx[0] not in self.cache:
                self.cache[idx[0]] = self.model.voxelize([torch.from_numpy(batch[0].points)])
            return self.cache[idx[0]]
        device = next(self.model.parameters()).device
        return [torch.from_numpy(s.points).to(device) for s in batch]


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
