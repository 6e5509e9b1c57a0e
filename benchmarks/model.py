"""Benchmark the model zoo: parameters, 12-slice forward time and 40-slice inference time.

Usage:
    .venv/bin/python benchmarks/model.py [--threads 2] [--device cpu|cuda] [--repeats 3] [--size 256]
        [--quick]

Input: batch 1, 4 sequences, 256 x 256 slices, every sequence available, eval mode, no autograd.
Times are the best of ``--repeats`` runs after one warm-up run (the least disturbed by other
processes on a shared machine); ``cpu s`` is this process's CPU time for that 40-slice run
(about 2x the wall time on an idle 2-core machine: a much smaller ratio means contention).
``--quick``: 128 x 128 slices, one timed run (same models and code).

Run time on 2 CPU cores (AMD EPYC, shared machine), measured: default about 2.5 minutes (with another
job on the cores); ``--quick`` 13-19 s.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from _common import header

import thrombseg  # noqa: F401  first: it sets OMP_WAIT_POLICY before torch loads OpenMP
from thrombseg.models import MODEL_REGISTRY, build_model


def _time(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> tuple[float, float]:
    """Best wall seconds of ``model(x)`` after a warm-up, and the CPU seconds of that run."""
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        model(x)
        sync()
        times = []
        for _ in range(repeats):
            t, c = time.perf_counter(), time.process_time()
            model(x)
            sync()
            times.append((time.perf_counter() - t, time.process_time() - c))
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs (default 3, --quick 1)")
    ap.add_argument("--models", nargs="*", default=list(MODEL_REGISTRY))
    ap.add_argument("--size", type=int, default=None, help="slice height and width (default 256, --quick 128)")
    ap.add_argument("--quick", action="store_true", help="128 x 128 slices, one timed run")
    args = ap.parse_args()
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.size = args.size or (128 if args.quick else 256)
    torch.set_num_threads(args.threads)
    header(itk_threads="not used")
    device = torch.device(args.device)
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"{platform.processor() or platform.machine()}, {args.threads} threads")
    print(f"torch {torch.__version__} on {device.type} ({where}); input 1 x 4 x S x "
          f"{args.size} x {args.size}")
    print(f"| {'model':<11} | {'params':>9} | {'12 slices (ms)':>14} | {'40 slices (s)':>13} "
          f"| {'cpu s':>6} |")
    print(f"|{'-' * 13}|{'-' * 10}:|{'-' * 15}:|{'-' * 14}:|{'-' * 7}:|")
    g = torch.Generator().manual_seed(0)
    x40 = torch.randn(1, 4, 40, args.size, args.size, generator=g).to(device)
    for name in args.models:
        torch.manual_seed(0)
        model = build_model(name, n_modalities=4, n_classes=2).to(device).eval()
        params = sum(p.numel() for p in model.parameters())
        t12, _ = _time(model, x40[:, :, :12].contiguous(), args.repeats)
        t40, c40 = _time(model, x40, args.repeats)
        print(f"| {name:<11} | {params:>9,} | {t12 * 1e3:>14.0f} | {t40:>13.2f} | {c40:>6.1f} |",
              flush=True)


if __name__ == "__main__":
    main()
