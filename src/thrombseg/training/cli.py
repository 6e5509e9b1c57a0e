"""``thrombseg train`` / ``thrombseg splits``: the training stage without Snakemake.

    thrombseg splits SHEET OUT.tsv [--protocol P] [--center C] [--seed N]
    thrombseg train HARMONIZED_DIR SPLITS.tsv OUT_DIR [--config config.yaml] [--experiment E] [--target T]

The workflow config's ``training:`` section holds ``defaults`` (any :class:`TrainConfig` field), an
``infarct`` override for the infarct model, and ``experiments`` (name -> model, dropout, protocol...).

The trainer (with Matplotlib and the evaluation and inference stack behind it) is imported only
when a run starts, so that ``thrombseg --help`` and ``thrombseg splits`` stay fast.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import pandas as pd

from ..config import ConfigError, load_config
from ..core.case import Case, load_case
from ..core.fs import add_overwrite_option, check_output_file
from ..core.sequences import TARGETS, current_target
from ..plan import deep_merge, experiment_settings, infarct_options, is_nnunet
from ..sheet import read_sheet
from .config import TrainConfig
from .splits import PROTOCOLS, assign_splits, write_splits


def run_training(harmonized_dir: str | Path, splits: str | Path, outdir: str | Path, cfg_dict: dict,
                 resume: bool = True) -> dict:
    """Train on the ``train`` rows of a splits table, validate on its ``val`` rows."""
    from .trainer import train  # deliberately lazy: see the module docstring

    cfg = TrainConfig.from_dict(cfg_dict)
    table = pd.read_csv(splits, sep="\t", dtype=str, keep_default_na=False)
    train_cases = split_cases(table, "train", harmonized_dir)
    val_cases = split_cases(table, "val", harmonized_dir)
    return train(train_cases, val_cases, cfg, outdir, resume=resume)


def split_cases(table: pd.DataFrame, split: str, harmonized_dir: str | Path) -> list[Case]:
    """The harmonized cases of one split of a splits table, in its row order."""
    rows = table[table["split"] == split]
    return [load_case(Path(harmonized_dir) / s, s, c) for s, c in zip(rows["subject"], rows["center"])]


def configure_logging() -> None:
    """One line per epoch to stderr (cluster logs) at INFO."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")


def _cmd_splits(a) -> int:
    check_output_file(a.out, a.overwrite, [a.sheet])
    df = assign_splits(read_sheet(a.sheet), a.protocol, seed=a.seed, center=a.center)
    write_splits(df, a.out)
    print(f"wrote {a.out}: " + ", ".join(f"{k} {v}" for k, v in df["split"].value_counts().items()))
    return 0


def _cmd_train(a) -> int:
    # The whole file is checked before any data is read or any folder made (ConfigError: one line each).
    conf = load_config(a.config) if a.config else {}
    training = conf.get("training") or {}
    if a.experiment and a.experiment not in (training.get("experiments") or {}):
        raise ConfigError([f"{a.config}: experiment {a.experiment!r} not in training.experiments "
                           f"({', '.join(sorted(training.get('experiments') or {})) or 'none'})"])
    if a.experiment and is_nnunet(training["experiments"][a.experiment]):
        raise ConfigError([f"{a.config}: experiment {a.experiment!r} is an nnU-Net baseline (model: nnunet): "
                           "the workflow trains it (rule nnunet_train), not thrombseg train"])
    configure_logging()
    if a.experiment:
        cfg, _ = experiment_settings(training, a.experiment, a.target)
    else:
        cfg = deep_merge(training.get("defaults") or {}, {"target": a.target})
        cfg = infarct_options(cfg) if current_target(a.target) == "infarct" else cfg
    row = run_training(a.harmonized_dir, a.splits, a.out_dir, cfg, resume=not a.restart)
    print(f"done: epoch {row.get('epoch')} val Dice {row.get('val_dice')} detection {row.get('val_detection')}")
    return 0


def add_subparsers(subparsers) -> None:
    """Hook for :mod:`thrombseg.cli`."""
    s = subparsers.add_parser("splits", help="assign train/val/test splits for a protocol")
    s.add_argument("sheet", type=Path)
    s.add_argument("out", type=Path)
    add_overwrite_option(s, file=True)
    s.add_argument("--protocol", choices=PROTOCOLS, default="multicentric")
    s.add_argument("--center", help="center of monocentric / held-out center of leave-center-out")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_cmd_splits)

    s = subparsers.add_parser("train", help="train a model (resumes from OUT_DIR/checkpoint_last.pt)")
    s.add_argument("harmonized_dir", type=Path)
    s.add_argument("splits", type=Path)
    s.add_argument("out_dir", type=Path)
    s.add_argument("--config", type=Path, default=Path("config/config.yaml"))
    s.add_argument("--experiment", help="a name of training.experiments")
    s.add_argument("--target", choices=TARGETS, default="thrombus")
    s.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
    s.set_defaults(func=_cmd_train)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="thrombseg-train")
    add_subparsers(p.add_subparsers(dest="command", required=True))
    a = p.parse_args(argv)
    return a.func(a)
