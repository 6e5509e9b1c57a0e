"""Curriculum training with gradual modality dropout, per-epoch validation and exact resume.

Resume is exact because every epoch's randomness (sampling, augmentation, dropout, torch ops) is
re-seeded from (seed, epoch): a run killed after epoch e and resumed from its checkpoint replays
epoch e+1 exactly as an uninterrupted run would. RNG states are saved anyway (belt and braces,
and for users who change the seeding).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..core.fs import check_resumable_dir
from ..core.sequences import DEFAULT_MODALITIES
from ..models.checkpoint import (build_network, export, load_checkpoint, resolve_device,
                                save_checkpoint)
from .data import AugmentConfig, Case, StackDataset
from .losses import SegmentationLoss
from .modality_dropout import (GROUPINGS, PRESETS, SCHEDULES, GradualModalityDropout, attenuation_at,
                               check_schedule, stage_index)

log = logging.getLogger("thrombseg.training")



@dataclass
class DropoutConfig:
    """Gradual modality dropout (training.modality_dropout): attenuation schedule, probability p.

    ``schedule: none`` is the exact identity (nothing drawn, nothing rescaled); so is every epoch
    before ``boundaries[0]`` with the staircase / linear / cosine schedules. ``preset: reference``
    fills in the keys a config does not set with the authors' public implementation's values
    (modality_dropout.PRESETS; see :meth:`from_dict`).
    """

    schedule: str = "staircase"  # staircase | linear | cosine | fixed | none
    p: float = 0.5
    stages: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    boundaries: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75)
    sigma: float = 0.05
    eligible: list[str] | None = None  # model channels that may be dropped; None = all
    grouping: str = "per_sequence"  # per_sequence (each sequence drawn alone) | per_sample (together)
    preset: str | None = None  # None | reference

    def __post_init__(self) -> None:
        where = "training.dropout"
        if self.schedule not in SCHEDULES:
            raise ValueError(f"{where}.schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.grouping not in GROUPINGS:
            raise ValueError(f"{where}.grouping must be one of {', '.join(GROUPINGS)}, got {self.grouping!r}")
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"{where}.preset must be null or one of {', '.join(PRESETS)}, got {self.preset!r}")
        if not 0.0 <= float(self.p) <= 1.0 or float(self.sigma) < 0:
            raise ValueError(f"{where}: p must lie in [0, 1] and sigma be >= 0, got p={self.p}, sigma={self.sigma}")
        try:
            check_schedule(self.stages, self.boundaries)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None

    @classmethod
    def from_dict(cls, d: dict) -> "DropoutConfig":
        """A config from a mapping; a ``preset`` supplies the keys the mapping does not set."""
        d = dict(d)
        preset = d.get("preset")
        if preset is not None and preset in PRESETS:
            d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in PRESETS[preset].items()} | d
        return cls(**d)


@dataclass
class TrainConfig:
    """Everything a training run depends on (stored in each checkpoint)."""

    target: str = "thrombus"
    modalities: list[str] | None = None
    model: str = "upattllstm"
    model_kwargs: dict = field(default_factory=dict)
    epochs: int = 30
    batch_size: int = 4
    stack: int = 12
    crop: tuple[int, int] = (128, 128)
    repeats: int = 1  # positive/negative pairs drawn per training case per epoch
    fg_oversample: float = 0.0
    negatives: str = "brain"  # target-free stack: anywhere in the brain in plane, or "near" the target
    optimizer: str = "adam"  # adam (MIDL 2024) | sgd (nnU-Net: momentum 0.99, poly)
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_schedule: str = "poly"  # poly | none
    loss: str = "dice_ce"
    class_weights: list[float] | None = None
    dropout: DropoutConfig = field(default_factory=DropoutConfig)
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)
    seed: int = 0
    deterministic: bool = True
    num_workers: int = 0
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = True  # mixed precision, GPU only
    val_every: int = 1
    val_overlap: float = 0.5
    val_max_cases: int | None = None  # validate on the first N val cases (full volumes are costly on CPU)
    threshold: float = 0.5

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown training option(s): {unknown}")
        if isinstance(d.get("dropout"), dict):
            d["dropout"] = DropoutConfig.from_dict(d["dropout"])
        if isinstance(d.get("augment"), dict):
            d["augment"] = AugmentConfig(**d["augment"])
        if d.get("crop") is not None and not isinstance(d["crop"], (list, tuple)):
            d["crop"] = (int(d["crop"]), int(d["crop"]))
        cfg = cls(**d)
        if cfg.modalities is None:
            cfg.modalities = list(DEFAULT_MODALITIES[cfg.target])
        cfg.crop = tuple(cfg.crop)
        return cfg

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def curriculum(epoch: int, cfg: TrainConfig) -> tuple[float, int, float]:
    """(attenuation, dropout stage index, site-simulation strength) at an epoch.

    The stage index counts ``dropout.boundaries`` reached (-1 before the first: no dropout then,
    attenuation 0). The site-simulation strength of the augmentation follows its own staircase,
    ``augment.site_boundaries`` (``(i + 1) / n`` once boundary ``i`` of ``n`` is reached, 0 before
    the first), so it is the same in every dropout arm (gmd / fixed / none) of an ablation.
    """
    d = cfg.dropout
    stage = stage_index(epoch, cfg.epochs, d.boundaries)
    site = (cfg.augment or AugmentConfig()).site_boundaries
    strength = (stage_index(epoch, cfg.epochs, site) + 1) / max(1, len(site))
    if d.schedule == "none":
        return 0.0, stage, strength
    a = attenuation_at(epoch, cfg.epochs, kind=d.schedule, stages=tuple(d.stages), boundaries=tuple(d.boundaries))
    return float(a), stage, strength


def make_dropout(cfg: TrainConfig) -> GradualModalityDropout:
    """The run's modality dropout, from ``cfg.dropout`` (``eligible`` names -> channel indices)."""
    d = cfg.dropout
    eligible = None
    if d.eligible is not None:
        eligible = [cfg.modalities.index(m) for m in d.eligible if m in cfg.modalities]
    return GradualModalityDropout(p=d.p, sigma=d.sigma, eligible=eligible, schedule=d.schedule,
                                  stages=tuple(d.stages), boundaries=tuple(d.boundaries), grouping=d.grouping)


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    st = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict) -> None:
    random.setstate(st["python"])
    np.random.set_state(tuple(st["numpy"]))  # saved as plain data (see models.checkpoint)
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def evaluate_cases(model, cases: list[Case], cfg: TrainConfig, device) -> dict:
    """Full-volume validation: mean Dice and detection rate over cases with a target."""
    from ..evaluation.metrics import evaluate_case
    from ..inference.sliding import predict_volume

    dices, detected = [], []
    for case in cases:
        truth = case.labels.get(cfg.target)
        if truth is None:
            continue
        arrays, avail = case.inputs(cfg.modalities)
        prob = predict_volume(model, arrays, avail, stack=cfg.stack, overlap=cfg.val_overlap, device=device)
        m = evaluate_case(prob >= cfg.threshold, np.asarray(truth) > 0, case.spacing)
        dices.append(m["dice"])
        if not np.isnan(m["detected"]):
            detected.append(m["detected"])
    return {"val_dice": float(np.mean(dices)) if dices else float("nan"),
            "val_detection": float(np.mean(detected)) if detected else float("nan")}


# What does not change the trained weights: a run may resume on another device or loader.
RESUME_IGNORES = ("device", "num_workers")


def changed_settings(saved: dict | None, cfg: TrainConfig) -> list[str]:
    """Options that differ between a checkpoint's recorded settings and ``cfg`` (none recorded: []).

    A setting that a newer thrombseg added counts as changed too, so such a run starts over rather
    than mix two versions' training.
    """
    if not saved:
        return []
    now = json.loads(json.dumps(cfg.to_dict()))  # tuples -> lists, as in the stored copy
    then = json.loads(json.dumps(saved, default=str))
    return sorted(k for k in now.keys() | then.keys()
                  if k not in RESUME_IGNORES and now.get(k) != then.get(k))


def train(train_cases: list[Case], val_cases: list[Case], cfg: TrainConfig, outdir: str | Path,
          resume: bool = True, stop_after: int | None = None) -> dict:
    """Train a model; resumes from ``outdir/checkpoint_last.pt`` when it exists.

    Args:
        train_cases, val_cases: harmonized cases.
        cfg: the run's configuration.
        outdir: checkpoints, ``metrics.csv``, ``training_curve.png``, ``model.pt`` (best validation
            epoch) and ``model_last.pt``.
        resume: continue from the last checkpoint when present.
        stop_after: stop after this epoch (for tests of interruption); None = run to the end.

    Returns:
        The last epoch's metrics row.
    """
    outdir = check_resumable_dir(outdir, "checkpoint_last.pt")  # never writes over a user's folder
    outdir.mkdir(parents=True, exist_ok=True)
    if not train_cases:
        raise ValueError("no training cases (check the protocol's splits)")
    device = resolve_device(cfg.device)
    torch.use_deterministic_algorithms(cfg.deterministic and device.type == "cpu", warn_only=True)
    _seed_all(cfg.seed)
    model = build_network(cfg).to(device)
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.99, nesterov=True, weight_decay=cfg.weight_decay)
    else:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}: expected adam or sgd")
    poly = (lambda e: (1 - e / cfg.epochs) ** 0.9) if cfg.lr_schedule == "poly" else (lambda e: 1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, poly)
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    loss_fn = SegmentationLoss(cfg.loss, cfg.class_weights).to(device)
    gmd = make_dropout(cfg)

    if cfg.val_max_cases is not None:
        val_cases = list(val_cases)[: cfg.val_max_cases]
    ds = StackDataset(train_cases * cfg.repeats, cfg.modalities, cfg.target, cfg.stack, cfg.crop,
                      cfg.fg_oversample, cfg.augment, cfg.seed, cfg.negatives)
    history: list[dict] = []
    start, best = 0, float("-inf")
    last = outdir / "checkpoint_last.pt"
    ck = load_checkpoint(last, device, keys=("model", "optimizer")) if resume and last.is_file() else None
    changed = changed_settings(ck.get("config"), cfg) if ck is not None else []
    if changed:  # the rule re-runs because its settings changed: resuming would keep the old run
        log.warning("%s was trained with other settings (%s): training from scratch", last, ", ".join(changed))
        ck = None
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"])
        _set_rng_state(ck["rng"])
        start, best, history = ck["epoch"] + 1, ck["best"], ck["history"]
        log.info("resuming from %s at epoch %d", last, start)
    log.info("training %s/%s on %s: %d train, %d val cases, modalities %s",
             cfg.model, cfg.target, device, len(train_cases), len(val_cases), cfg.modalities)

    row: dict = history[-1] if history else {}
    for epoch in range(start, cfg.epochs):
        t0 = time.time()
        a, stage, strength = curriculum(epoch, cfg)
        drop_a = a if gmd.active(epoch, cfg.epochs) else None  # None: the batch passes unchanged
        epoch_seed = cfg.seed * 100_003 + epoch
        _seed_all(epoch_seed)
        ds.set_epoch(epoch, strength)
        gen = torch.Generator().manual_seed(epoch_seed)
        loader = DataLoader(ds, batch_size=cfg.batch_size, shuffle=True, generator=gen,
                            num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                            persistent_workers=False, drop_last=len(ds) > cfg.batch_size)
        model.train()
        losses, n_stacks = [], 0
        for batch in loader:
            x, av, y = batch["x"].to(device, non_blocking=True), batch["available"].to(device), batch["y"].to(device)
            x, av = gmd(x, av, drop_a, generator=gen)
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                loss = loss_fn(model(x, av), y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            losses.append(float(loss.detach()))
            n_stacks += len(x)
        sched.step()
        train_time = time.time() - t0
        row = {"epoch": epoch, "stage": stage, "attenuation": a, "site_strength": strength,
               "lr": opt.param_groups[0]["lr"], "train_loss": float(np.mean(losses)),
               "stacks_per_s": n_stacks / max(train_time, 1e-9)}
        if val_cases and ((epoch + 1) % cfg.val_every == 0 or epoch == cfg.epochs - 1):
            row |= evaluate_cases(model, val_cases, cfg, device)
        else:
            row |= {"val_dice": float("nan"), "val_detection": float("nan")}
        row["seconds"] = time.time() - t0
        history.append(row)
        score = row["val_dice"] if not np.isnan(row["val_dice"]) else -row["train_loss"]
        ck = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
              "scaler": scaler.state_dict(), "epoch": epoch, "stage": stage, "rng": _rng_state(),
              "best": max(best, score), "history": history, "config": cfg.to_dict()}
        if score > best:  # best weights kept beside the checkpoint: the workflow may delete model.pt
            best = score
            save_checkpoint(export(model, cfg.to_dict(), row), outdir / "checkpoint_best.pt")
        save_checkpoint(ck, last)
        _write_metrics(history, outdir / "metrics.csv")
        log.info("epoch %d/%d stage %d a=%.2f loss %.4f val dice %.3f det %.2f (%.1f s, %.1f stacks/s)",
                 epoch + 1, cfg.epochs, stage, a, row["train_loss"], row["val_dice"], row["val_detection"],
                 row["seconds"], row["stacks_per_s"])
        if stop_after is not None and epoch >= stop_after:
            break
    save_checkpoint(export(model, cfg.to_dict(), row), outdir / "model_last.pt")
    shutil.copyfile(outdir / "checkpoint_best.pt", outdir / "model.pt.tmp")
    os.replace(outdir / "model.pt.tmp", outdir / "model.pt")
    try:
        plot_training_curve(history, cfg, outdir / "training_curve.png")
    except Exception as exc:  # a figure must never lose a trained model
        log.warning("training curve not drawn: %s", exc)
    return row


def _write_metrics(history: list[dict], path: Path) -> None:
    import pandas as pd

    tmp = path.with_name(path.name + ".tmp")
    pd.DataFrame(history).to_csv(tmp, index=False)
    os.replace(tmp, path)


def plot_training_curve(history: list[dict], cfg: TrainConfig, path: Path) -> Path:
    """Loss and validation metrics per epoch, curriculum stages shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = np.array([r["epoch"] + 1 for r in history])
    fig, ax = plt.subplots(figsize=(7, 3.5))
    stages = np.array([r["stage"] for r in history])
    shades = ["#f0f0f0", "#d9d9d9", "#bdbdbd", "#969696", "#737373"]
    for s in np.unique(stages):
        e = ep[stages == s]
        att = history[int(np.flatnonzero(stages == s)[0])]["attenuation"]
        ax.axvspan(e.min() - 0.5, e.max() + 0.5, color=shades[int(s) % len(shades)], alpha=0.6, lw=0)
        ax.text(e.mean(), 1.02, f"a={att:.2f}", ha="center", va="bottom", fontsize=8, transform=ax.get_xaxis_transform())
    ax.plot(ep, [r["train_loss"] for r in history], color="#0072B2", label="training loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel(("loss (Dice + CE" if cfg.loss == "dice_ce" else f"loss ({cfg.loss}") + ", unitless)")
    ax2 = ax.twinx()
    ax2.plot(ep, [r["val_dice"] for r in history], "o-", color="#D55E00", ms=3, label="val Dice")
    ax2.plot(ep, [r["val_detection"] for r in history], "s--", color="#009E73", ms=3, label="val detection rate")
    ax2.set_ylim(0, 1.05)
    ax2.set_ylabel("validation Dice / detection (fraction)")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="center right", fontsize=8)
    # pad: the stage labels (a=...) sit just above the axes, under the title
    ax.set_title(f"{cfg.model} / {cfg.target}: GMD stages shaded ({cfg.dropout.schedule})", fontsize=9, pad=16)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def configure_logging() -> None:
    """One line per epoch to stderr (cluster logs) at INFO."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")


def save_json(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)
