"""Training throughput: stacks per second for the configured model on this machine.

    .venv/bin/python benchmarks/train.py [--config config/config.yaml] [--steps 20] [--device auto]
        [--results results] [--quick]

Uses the demo's harmonized training patients (<results>/harmonized/multicentric, <results>/splits/multicentric.tsv)
when a demo run exists, otherwise 8 random 5-sequence volumes of demo size (160 x 190 x 70) with a
small thrombus. The loader is re-started for as many epochs as ``--steps`` needs. The first two steps
are warm-up, not timed. One row for the configured model (the demo's half-width UpAttLLSTM) and,
when the config sets ``model_kwargs``, one for the architecture's own default widths. Prints a
table; on a GPU it also prints the utilisation sampled by nvidia-smi.

Run time on 2 CPU cores (AMD EPYC, shared machine), measured with random volumes: default (20 timed
steps of the demo's batch 8 per row) about 65 s; ``--quick`` (5 steps per row) 20-30 s.
"""
from __future__ import annotations

import argparse
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from _common import header
from torch.utils.data import DataLoader

import thrombseg  # noqa: F401  first: it sets OMP_WAIT_POLICY before torch loads OpenMP
from thrombseg.core.case import Case
from thrombseg.models.checkpoint import build_network, resolve_device
from thrombseg.plan import experiment_settings, first_thrombseg_experiment
from thrombseg.training.cli import split_cases
from thrombseg.training.config import TrainConfig
from thrombseg.training.data import StackDataset
from thrombseg.training.losses import SegmentationLoss

REPO = Path(__file__).resolve().parents[1]


def _cases(modalities, results: Path) -> tuple[list[Case], str]:
    splits = results / "splits/multicentric.tsv"
    harmonized = results / "harmonized" / "multicentric"
    if splits.is_file() and harmonized.is_dir():
        cases = split_cases(pd.read_csv(splits, sep="\t", dtype=str, keep_default_na=False), "train", harmonized)
        return cases, f"{len(cases)} harmonized training patients of {results}"
    rng = np.random.default_rng(0)
    out = []
    for i in range(8):
        lab = np.zeros((160, 190, 70), np.uint8)
        lab[80:84, 90:94, 30:34] = 1
        out.append(Case(f"r{i}", "c", {m: rng.normal(size=lab.shape).astype(np.float32) for m in modalities},
                        {"thrombus": lab}, None, (1.0, 1.0, 2.0)))
    return out, "8 random volumes 160x190x70 (no demo run)"


def _batches(dl: DataLoader, ds: StackDataset):
    """Batches without end: the loader is started again for each epoch (one epoch = 2 stacks per case)."""
    epoch = 0
    while True:
        ds.set_epoch(epoch)
        yield from dl
        epoch += 1


def _gpu_util(samples: list, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=5).stdout
            samples.append(float(out.split()[0]))
        except Exception:
            return
        time.sleep(0.5)


def _throughput(cfg: TrainConfig, device, batches, steps: int) -> tuple[float, list]:
    """Stacks per second over ``steps`` training steps after 2 warm-up steps; GPU utilisation samples."""
    model = build_network(cfg).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    loss_fn = SegmentationLoss(cfg.loss).to(device)
    samples, stop = [], threading.Event()
    if device.type == "cuda":
        threading.Thread(target=_gpu_util, args=(samples, stop), daemon=True).start()
    n, t0 = 0, None
    for step in range(steps + 2):
        b = next(batches)
        x, av, y = b["x"].to(device), b["available"].to(device), b["y"].to(device)
        opt.zero_grad()
        with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
            loss = loss_fn(model(x, av), y)
        loss.backward()
        opt.step()
        if step == 1:  # skip warm-up
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        elif step > 1:
            n += len(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    stop.set()
    return n / dt, samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "config/config.yaml"))
    ap.add_argument("--results", type=Path, default=REPO / "results", help="a demo run (else random volumes)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 20, --quick 5)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="5 timed steps")
    a = ap.parse_args()
    steps = a.steps or (5 if a.quick else 20)
    torch.set_num_threads(a.threads)
    header(itk_threads="not used")
    training = yaml.safe_load(Path(a.config).read_text())["training"]
    exp = first_thrombseg_experiment(training)
    cfg = TrainConfig.from_dict(experiment_settings(training, exp, "thrombus")[0] | {"device": a.device})
    device = resolve_device(cfg.device)
    cases, source = _cases(cfg.modalities, a.results)
    ds = StackDataset(cases * 8, cfg.modalities, cfg.target, cfg.stack, cfg.crop,
                      cfg.fg_oversample, cfg.augment, cfg.seed)
    dl = DataLoader(ds, batch_size=cfg.batch_size, shuffle=True, num_workers=a.workers,
                    pin_memory=device.type == "cuda", persistent_workers=a.workers > 0)
    batches = _batches(dl, ds)
    # the configured model, then (when the config narrows it) the architecture's own default widths
    variants = [(f"config {exp}", cfg)]
    if cfg.model_kwargs:
        variants.append(("library default", TrainConfig.from_dict(cfg.to_dict() | {"model_kwargs": {}})))
    print(f"training data: {source}; {steps} timed steps after 2 warm-up steps")
    print("| model | kwargs | device | threads | workers | batch | stack | crop | stacks/s | GPU util % |")
    print("|---|---|---|---:|---:|---:|---:|---|---:|---:|")
    for name, c in variants:
        rate, samples = _throughput(c, device, batches, steps)
        util = f"{np.mean(samples):.0f}" if samples else "n/a"
        kw = ", ".join(f"{k}={v}" for k, v in c.model_kwargs.items()) or "-"
        print(f"| {c.model} ({name}) | {kw} | {device} | {a.threads} | {a.workers} | {c.batch_size} | {c.stack} | "
              f"{c.crop[0]}x{c.crop[1]} | {rate:.2f} | {util} |", flush=True)


if __name__ == "__main__":
    main()
