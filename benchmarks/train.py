"""Training throughput: stacks per second for the configured model on this machine.

    .venv/bin/python benchmarks/train.py [--config config/config.yaml] [--steps 20] [--device auto]

Uses the demo's harmonized patients (results/harmonized, results/splits/multicentric.tsv) when they
exist, otherwise random 5-sequence volumes of demo size. Prints a table; on a GPU it also prints
the utilisation sampled by nvidia-smi while training.
"""
from __future__ import annotations

import argparse
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import thrombseg  # noqa: F401  first: it sets OMP_WAIT_POLICY before torch loads OpenMP
import torch
import yaml
from torch.utils.data import DataLoader

from thrombseg.training.cli import experiment_settings
from thrombseg.training.data import Case, StackDataset, load_case
from thrombseg.training.losses import SegmentationLoss
from thrombseg.training.trainer import TrainConfig, make_model, resolve_device

REPO = Path(__file__).resolve().parents[1]


def _cases(modalities) -> list[Case]:
    splits = REPO / "results/splits/multicentric.tsv"
    if splits.is_file():
        import pandas as pd

        sp = pd.read_csv(splits, sep="\t", dtype=str)
        rows = sp[sp.split == "train"]
        return [load_case(REPO / "results/harmonized" / s, s, c) for s, c in zip(rows.subject, rows.center)]
    rng = np.random.default_rng(0)
    out = []
    for i in range(8):
        lab = np.zeros((160, 190, 70), np.uint8)
        lab[80:84, 90:94, 30:34] = 1
        out.append(Case(f"r{i}", "c", {m: rng.normal(size=lab.shape).astype(np.float32) for m in modalities},
                        {"thrombus": lab}, None, (1.0, 1.0, 2.0)))
    return out


def _gpu_util(samples: list, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=5).stdout
            samples.append(float(out.split()[0]))
        except Exception:
            return
        time.sleep(0.5)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=str(REPO / "config/config.yaml"))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    training = yaml.safe_load(Path(a.config).read_text())["training"]
    exp = sorted(training["experiments"])[0]
    cfg = TrainConfig.from_dict(experiment_settings(training, exp, "thrombus")[0] | {"device": a.device})
    device = resolve_device(cfg.device)
    model = make_model(cfg).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    loss_fn = SegmentationLoss(cfg.loss).to(device)
    ds = StackDataset(_cases(cfg.modalities) * 8, cfg.modalities, cfg.target, cfg.stack, cfg.crop,
                      cfg.fg_oversample, cfg.augment, cfg.seed)
    dl = DataLoader(ds, batch_size=cfg.batch_size, shuffle=True, num_workers=a.workers,
                    pin_memory=device.type == "cuda", persistent_workers=a.workers > 0)
    samples, stop = [], threading.Event()
    if device.type == "cuda":
        threading.Thread(target=_gpu_util, args=(samples, stop), daemon=True).start()
    n, t0, it = 0, None, iter(dl)
    for step in range(a.steps + 2):
        b = next(it)
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
    print("| model | device | threads | workers | batch | stack | crop | stacks/s | GPU util % |")
    print("|---|---|---:|---:|---:|---:|---|---:|---:|")
    util = f"{np.mean(samples):.0f}" if samples else "n/a"
    print(f"| {cfg.model} | {device} | {a.threads} | {a.workers} | {cfg.batch_size} | {cfg.stack} | "
          f"{cfg.crop[0]}x{cfg.crop[1]} | {n / dt:.2f} | {util} |")


if __name__ == "__main__":
    main()
