"""Curriculum training with gradual modality dropout, per-epoch validation and exact resume.

:class:`Trainer` follows the nnU-Net v2 trainer pattern: one run is an object whose steps are small
methods (``build_network``, ``configure_optimizers``, ``make_dataset``, ``make_loader``,
``mine_hard_negatives``, ``train_step``, ``train_epoch``, ``validate``, ``save_checkpoint``,
``maybe_resume``, ``export``), so a trainer variant is a subclass that overrides one of them.
:func:`train` runs the default one.

Resume is exact because every epoch's randomness (sampling, augmentation, dropout, torch ops) is
re-seeded from (seed, epoch): a run killed after epoch e and resumed from its checkpoint replays
epoch e+1 exactly as an uninterrupted run would. RNG states are saved anyway (belt and braces,
and for users who change the seeding). The last mining round's hard-negative centres are saved too:
they come from weights a resumed run no longer has.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from ..core.case import Case
from ..core.fs import check_resumable_dir
from ..core.io import copy_file, write_json, write_table
from ..core.layout import SUBJECTS_RECORD
from ..evaluation.metrics import evaluate_case
from ..inference.sequences import case_sequences, sequence_subsets
from ..inference.sliding import predict_volume
from ..models import checkpoint
from .config import AugmentConfig, TrainConfig, changed_settings
from .data import StackDataset
from .hard_negatives import check_training_only, mine_false_positives, mining_epochs
from .losses import SegmentationLoss
from .modality_dropout import GradualModalityDropout, attenuation_at, stage_index
from .plots import plot_training_curve

log = logging.getLogger("thrombseg.training")

CHECKPOINT_LAST = "checkpoint_last.pt"  # full state of the last epoch: what a run resumes from
CHECKPOINT_BEST = "checkpoint_best.pt"  # best weights kept beside it: the workflow may delete model.pt
MINING_LOG = "hard_negatives.tsv"  # per mining round and patient: false positives found, centres kept
MINING_LOG_COLUMNS = ("epoch", "subject", "fp_components", "centres_kept")
# metrics.csv columns of a run with hard negatives (NaN in epochs without a mining round)
MINING_COLUMNS = ("mined_fp_mean", "mined_fp_max", "mined_centres", "mining_s")


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
    attenuation = attenuation_at(epoch, cfg.epochs, kind=d.schedule, stages=tuple(d.stages),
                                 boundaries=tuple(d.boundaries))
    return float(attenuation), stage, strength


def make_dropout(cfg: TrainConfig) -> GradualModalityDropout:
    """The run's modality dropout, from ``cfg.dropout`` (``eligible`` names -> channel indices)."""
    d = cfg.dropout
    eligible = None
    if d.eligible is not None:
        eligible = [cfg.modalities.index(m) for m in d.eligible if m in cfg.modalities]
    return GradualModalityDropout(p=d.p, sigma=d.sigma, eligible=eligible, schedule=d.schedule,
                                  stages=tuple(d.stages), boundaries=tuple(d.boundaries), grouping=d.grouping)


def full_strength_epoch(cfg: TrainConfig) -> int:
    """The first epoch at which the curriculum (dropout stage and site simulation) is at full strength."""
    return next((e for e in range(cfg.epochs) if _at_full_strength(e, cfg)), cfg.epochs - 1)


def _at_full_strength(epoch: int, cfg: TrainConfig) -> bool:
    _, stage, site = curriculum(epoch, cfg)
    return stage == len(cfg.dropout.boundaries) - 1 and site >= 1.0


def selectable(epoch: int, cfg: TrainConfig) -> bool:
    """Whether an epoch may become ``model.pt``: with ``selection: full_strength`` only once the
    curriculum is complete (the model GMD trained), and always the last epoch."""
    return cfg.selection != "full_strength" or epoch >= full_strength_epoch(cfg) or epoch == cfg.epochs - 1


def evaluate_cases(model, cases: list[Case], cfg: TrainConfig, device) -> dict:
    """Full-volume validation: mean Dice and detection rate over the cases with a non-empty target and
    the sequence subsets of ``cfg.val_subsets`` (each case's full set, or it and each set missing one).

    A case whose target is empty (a thrombus-negative patient) is left out: its Dice would be 1 for
    predicting nothing, so ``val_dice`` (the checkpoint selection) would reward predicting nothing.
    """
    dices, detected = [], []
    for case in cases:
        truth = case.labels.get(cfg.target)
        if truth is None or not np.any(truth):
            continue
        available = case_sequences(case, cfg.modalities)
        for keep in sequence_subsets(available, cfg.val_subsets):
            drop = tuple(s for s in available if s not in keep)
            arrays, avail = case.inputs(cfg.modalities, drop=drop)
            if not avail.any():
                continue
            prob = predict_volume(model, arrays, avail, stack=cfg.stack, overlap=cfg.val_overlap, device=device)
            m = evaluate_case(prob >= cfg.threshold, np.asarray(truth) > 0, case.spacing)
            dices.append(m["dice"])
            if not np.isnan(m["detected"]):
                detected.append(m["detected"])
    return {"val_dice": float(np.mean(dices)) if dices else float("nan"),
            "val_detection": float(np.mean(detected)) if detected else float("nan")}


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


class Trainer:
    """One training run in ``outdir``: checkpoints, ``metrics.csv``, ``training_curve.png``,
    ``model.pt`` (best validation epoch) and ``model_last.pt``.

    The constructor builds everything in a fixed order (the initial weights depend on the seeded
    RNG); :meth:`maybe_resume` then restores a checkpoint and :meth:`fit` runs the epochs.
    """

    def __init__(self, train_cases: list[Case], val_cases: list[Case], cfg: TrainConfig, outdir: str | Path):
        self.outdir = check_resumable_dir(outdir, CHECKPOINT_LAST)  # never writes over a user's folder
        self.outdir.mkdir(parents=True, exist_ok=True)
        if not train_cases:
            raise ValueError("no training cases (check the protocol's splits)")
        self.cfg = cfg
        self.train_cases = list(train_cases)
        self.val_cases = list(val_cases)[: cfg.val_max_cases] if cfg.val_max_cases is not None else val_cases
        self.device = checkpoint.resolve_device(cfg.device)
        torch.use_deterministic_algorithms(cfg.deterministic and self.device.type == "cpu", warn_only=True)
        _seed_all(cfg.seed)
        self.model = self.build_network().to(self.device)
        self.optimizer, self.scheduler = self.configure_optimizers()
        self.use_amp = cfg.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.loss_fn = SegmentationLoss(cfg.loss, cfg.class_weights).to(self.device)
        self.dropout = make_dropout(cfg)
        self.dataset = self.make_dataset()
        self.start_epoch, self.best, self.history = 0, float("-inf"), []
        self.hard_centres: dict[str, list] = {}  # the last mining round's centres, per subject
        self.mining_log: list[dict] = []
        if cfg.hard_negatives.enabled:  # fail before the first epoch, not at the first mining round
            check_training_only(self.train_cases, self.val_cases)
            if not mining_epochs(cfg):
                log.warning("hard_negatives is enabled but no mining round falls within %d epochs (every: %s%s)",
                            cfg.epochs, cfg.hard_negatives.every,
                            ", no new dropout stage" if cfg.hard_negatives.every is None else " >= epochs")

    # ---------------------------------------------------------------- what a run is made of
    def build_network(self) -> torch.nn.Module:
        """The network the config names, with freshly seeded weights."""
        return checkpoint.build_network(self.cfg)

    def configure_optimizers(self) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
        """Adam (MIDL 2024) or SGD with Nesterov momentum 0.99 (nnU-Net), poly or constant rate."""
        cfg, params = self.cfg, self.model.parameters()
        if cfg.optimizer == "adam":
            optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        elif cfg.optimizer == "sgd":
            optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=0.99, nesterov=True, weight_decay=cfg.weight_decay)
        else:
            raise ValueError(f"unknown optimizer {cfg.optimizer!r}: expected adam or sgd")
        poly = (lambda e: (1 - e / cfg.epochs) ** 0.9) if cfg.lr_schedule == "poly" else (lambda e: 1.0)
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, poly)

    def make_dataset(self) -> StackDataset:
        """Positive/negative stack pairs, ``repeats`` of them per training case and epoch."""
        cfg = self.cfg
        hard_share = cfg.hard_negatives.share if cfg.hard_negatives.enabled else 0.0
        return StackDataset(self.train_cases * cfg.repeats, cfg.modalities, cfg.target, cfg.stack, cfg.crop,
                            cfg.fg_oversample, cfg.augment, cfg.seed, cfg.negatives, hard_share)

    def make_loader(self, generator: torch.Generator) -> DataLoader:
        """The epoch's shuffled batches; the order comes from ``generator`` alone."""
        cfg = self.cfg
        return DataLoader(self.dataset, batch_size=cfg.batch_size, shuffle=True, generator=generator,
                          num_workers=cfg.num_workers, pin_memory=self.device.type == "cuda",
                          persistent_workers=False, drop_last=len(self.dataset) > cfg.batch_size)

    # ---------------------------------------------------------------- one epoch
    def mine_hard_negatives(self, epoch: int) -> dict:
        """A mining round on the training patients when ``epoch`` starts one; its part of the row.

        Without hard negatives: nothing, and no column. With them: false positives per patient
        (mean, max), centres kept and seconds taken, NaN in epochs without a round.
        """
        if not self.cfg.hard_negatives.enabled:
            return {}
        if epoch not in mining_epochs(self.cfg):
            return dict.fromkeys(MINING_COLUMNS, float("nan"))
        t0 = time.time()
        mined = mine_false_positives(self.model, self.train_cases, self.cfg, self.device, self.val_cases)
        self.hard_centres = {m.subject: m.centres.tolist() for m in mined}
        self.dataset.set_hard_negatives(self.hard_centres)
        self.mining_log += [{"epoch": epoch, "subject": m.subject, "fp_components": m.n_false_positives,
                             "centres_kept": len(m.centres)} for m in mined]
        counts = [m.n_false_positives for m in mined]
        seconds = time.time() - t0
        log.info("epoch %d: hard-negative mining found %s false-positive components per patient (%.1f s)",
                 epoch + 1, ", ".join(f"{m.subject} {m.n_false_positives}" for m in mined), seconds)
        return {"mined_fp_mean": float(np.mean(counts)), "mined_fp_max": float(np.max(counts)),
                "mined_centres": float(sum(len(m.centres) for m in mined)), "mining_s": seconds}

    def seed_epoch(self, epoch: int) -> torch.Generator:
        """Re-seed every RNG from (seed, epoch) and return the epoch's generator (what makes resume exact)."""
        epoch_seed = self.cfg.seed * 100_003 + epoch
        _seed_all(epoch_seed)
        return torch.Generator().manual_seed(epoch_seed)

    def train_step(self, batch: dict, attenuation: float | None, generator: torch.Generator) -> float:
        """Modality dropout at ``attenuation`` (None: none), one optimizer step; the batch's loss."""
        device = self.device
        x, av, y = batch["x"].to(device, non_blocking=True), batch["available"].to(device), batch["y"].to(device)
        x, av = self.dropout(x, av, attenuation, generator=generator)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=self.use_amp):
            loss = self.loss_fn(self.model(x, av), y)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return float(loss.detach())

    def train_epoch(self, epoch: int) -> dict:
        """One pass over the epoch's stacks at the curriculum's stage; the training part of its row."""
        t0 = time.time()
        attenuation, stage, strength = curriculum(epoch, self.cfg)
        drop_at = attenuation if self.dropout.active(epoch, self.cfg.epochs) else None  # None: batch unchanged
        generator = self.seed_epoch(epoch)
        self.dataset.set_epoch(epoch, strength)
        self.model.train()
        losses, n_stacks = [], 0
        for batch in self.make_loader(generator):
            losses.append(self.train_step(batch, drop_at, generator))
            n_stacks += len(batch["x"])
        self.scheduler.step()
        train_time = time.time() - t0
        return {"epoch": epoch, "stage": stage, "attenuation": attenuation, "site_strength": strength,
                "lr": self.optimizer.param_groups[0]["lr"], "train_loss": float(np.mean(losses)),
                "stacks_per_s": n_stacks / max(train_time, 1e-9)}

    def validate(self, epoch: int) -> dict:
        """Validation Dice and detection every ``val_every`` epochs and at the last (NaN otherwise)."""
        cfg = self.cfg
        if self.val_cases and ((epoch + 1) % cfg.val_every == 0 or epoch == cfg.epochs - 1):
            return evaluate_cases(self.model, self.val_cases, cfg, self.device)
        return {"val_dice": float("nan"), "val_detection": float("nan")}

    # ---------------------------------------------------------------- state on disk
    def save_checkpoint(self, epoch: int, row: dict) -> None:
        """The last epoch's full state, the best weights so far, and ``metrics.csv``."""
        score = row["val_dice"] if not np.isnan(row["val_dice"]) else -row["train_loss"]
        if self.cfg.selection == "last":
            score = float(epoch)
        if not selectable(epoch, self.cfg):
            score = -np.inf
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), "epoch": epoch,
                 "stage": row["stage"], "rng": _rng_state(), "best": max(self.best, score),
                 "history": self.history, "config": self.cfg.to_dict()}
        if self.cfg.hard_negatives.enabled:
            state["hard_negatives"] = {"centres": self.hard_centres, "log": self.mining_log}
        if score > self.best:
            self.best = score
            checkpoint.save_checkpoint(checkpoint.export(self.model, self.cfg.to_dict(), row),
                                       self.outdir / CHECKPOINT_BEST)
        checkpoint.save_checkpoint(state, self.outdir / CHECKPOINT_LAST)
        write_table(pd.DataFrame(self.history), self.outdir / "metrics.csv")
        if self.cfg.hard_negatives.enabled:
            write_table(pd.DataFrame(self.mining_log, columns=list(MINING_LOG_COLUMNS)), self.outdir / MINING_LOG)

    def maybe_resume(self, resume: bool = True) -> None:
        """Continue from ``checkpoint_last.pt`` when asked, present and made with the same settings."""
        last = self.outdir / CHECKPOINT_LAST
        if not (resume and last.is_file()):
            return
        saved = checkpoint.load_checkpoint(last, self.device, keys=("model", "optimizer"))
        changed = changed_settings(saved.get("config"), self.cfg)
        if changed:  # the rule re-runs because its settings changed: resuming would keep the old run
            log.warning("%s was trained with other settings (%s): training from scratch", last, ", ".join(changed))
            return
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.scaler.load_state_dict(saved["scaler"])
        _set_rng_state(saved["rng"])
        self.start_epoch, self.best, self.history = saved["epoch"] + 1, saved["best"], saved["history"]
        if "hard_negatives" in saved:  # the last round's centres: its weights are gone
            self.hard_centres, self.mining_log = saved["hard_negatives"]["centres"], saved["hard_negatives"]["log"]
            self.dataset.set_hard_negatives(self.hard_centres)
        log.info("resuming from %s at epoch %d", last, self.start_epoch)

    def export(self, row: dict) -> None:
        """``model_last.pt`` (last epoch), ``model.pt`` (best epoch), the patients that made them
        (``subjects.json``, read by the leakage audit) and the training curve."""
        checkpoint.save_checkpoint(checkpoint.export(self.model, self.cfg.to_dict(), row), self.outdir / "model_last.pt")
        write_json({"train": [c.subject for c in self.train_cases], "val": [c.subject for c in self.val_cases]},
                   self.outdir / SUBJECTS_RECORD)
        copy_file(self.outdir / CHECKPOINT_BEST, self.outdir / "model.pt")
        try:
            plot_training_curve(self.history, self.cfg, self.outdir / "training_curve.png")
        except Exception as exc:  # a figure must never lose a trained model
            log.warning("training curve not drawn: %s", exc)

    # ---------------------------------------------------------------- the run
    def fit(self, stop_after: int | None = None) -> dict:
        """Train the remaining epochs, checkpointing each, then export; the last epoch's row."""
        cfg = self.cfg
        log.info("training %s/%s on %s: %d train, %d val cases, modalities %s",
                 cfg.model, cfg.target, self.device, len(self.train_cases), len(self.val_cases), cfg.modalities)
        row: dict = self.history[-1] if self.history else {}
        for epoch in range(self.start_epoch, cfg.epochs):
            t0 = time.time()
            mined = self.mine_hard_negatives(epoch)  # before the epoch: its stacks use the new centres
            row = self.train_epoch(epoch) | mined | self.validate(epoch)
            row["seconds"] = time.time() - t0
            self.history.append(row)
            self.save_checkpoint(epoch, row)
            log.info("epoch %d/%d stage %d a=%.2f loss %.4f val dice %.3f det %.2f (%.1f s, %.1f stacks/s)",
                     epoch + 1, cfg.epochs, row["stage"], row["attenuation"], row["train_loss"], row["val_dice"],
                     row["val_detection"], row["seconds"], row["stacks_per_s"])
            if stop_after is not None and epoch >= stop_after:
                break
        self.export(row)
        return row


def train(train_cases: list[Case], val_cases: list[Case], cfg: TrainConfig, outdir: str | Path,
          resume: bool = True, stop_after: int | None = None) -> dict:
    """Train a model with :class:`Trainer`; resumes from ``outdir/checkpoint_last.pt`` when it exists.

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
    trainer = Trainer(train_cases, val_cases, cfg, outdir)
    trainer.maybe_resume(resume)
    return trainer.fit(stop_after)
