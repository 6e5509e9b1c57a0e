"""Generation time and size on disk of the synthetic cohort.

    .venv/bin/python benchmarks/synth.py [--outdir DIR] [--n-per-center 8] [--jobs 2] [--size demo] [--quick]

Prints one table: per center, subjects, files, size on disk; then the total wall time. The cohort
goes to a temporary folder unless ``--outdir`` is given. ``--quick``: 1 patient per center.

Run time on 2 CPU cores (AMD EPYC, shared machine): default (32 patients) about 70 s; ``--quick``
(4 patients) about 12 s.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pandas as pd
from _common import header

from thrombseg.core.sequences import LABELS, SEQUENCES
from thrombseg.synth import DEFAULT_CENTERS, generate_cohort


def _size(paths) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--outdir", type=Path, default=None, help="keep the cohort here (default: a temp dir)")
    ap.add_argument("--n-per-center", type=int, default=None, help="default 8, --quick 1")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--size", choices=["demo", "paper"], default="demo")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="1 patient per center")
    a = ap.parse_args(argv)
    a.n_per_center = a.n_per_center or (1 if a.quick else 8)
    header(itk_threads="not used")
    tmp = None
    if a.outdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="synth-bench-")
        a.outdir = Path(tmp.name)
    t0 = time.perf_counter()
    sheet = generate_cohort(a.outdir, n_per_center=a.n_per_center, seed=a.seed, size=a.size, n_jobs=a.jobs)
    wall = time.perf_counter() - t0
    df = pd.read_csv(sheet, sep="\t", dtype=str, keep_default_na=False)
    root = sheet.parent
    print(f"synthetic cohort: size={a.size}, {a.n_per_center} per center, seed={a.seed}, jobs={a.jobs}, "
          f"cpus={os.cpu_count()}")
    print(f"{'center':<8} {'subjects':>8} {'images':>7} {'masks':>6} {'MB':>8}  sequences")
    tot_mb = 0.0
    for c in [c["name"] for c in DEFAULT_CENTERS if c["name"] in set(df.center)] + \
             sorted(set(df.center) - {c["name"] for c in DEFAULT_CENTERS}):
        sub = df[df.center == c]
        imgs = [root / p for col in SEQUENCES for p in sub[col] if p]
        masks = [root / p for col in LABELS for p in sub[col] if p]
        mb = (_size(imgs) + _size(masks)) / 1e6
        tot_mb += mb
        seqs = [col for col in SEQUENCES if (sub[col] != "").any()]
        print(f"{c:<8} {len(sub):>8} {len(imgs):>7} {len(masks):>6} {mb:>8.1f}  {' '.join(seqs)}")
    all_mb = _size(root.rglob("*")) / 1e6
    print(f"{'total':<8} {len(df):>8} {'':>7} {'':>6} {tot_mb:>8.1f}  (whole tree incl. truth/QC: {all_mb:.1f} MB)")
    print(f"generation wall time: {wall:.1f} s ({wall / max(len(df), 1):.2f} s per subject)")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
