"""Time to build the DAG (dry run) over a large sample sheet.

    .venv/bin/python benchmarks/dag.py [--n 200 2000] [--quick]

Writes a sheet of N patients over 8 centers that all point to one tiny NIfTI set (parse-time
validation checks file existence only), in a temporary folder, then times `snakemake -n` on it.
Prints a table. ``--quick``: 100 patients (most of a dry run is start-up and parsing).

Run time on 2 CPU cores (AMD EPYC, shared machine), measured: default about 45 s; ``--quick`` about 17 s.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from _common import header

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=None, help="sheet sizes (default 200 2000, --quick 100)")
    ap.add_argument("--quick", action="store_true", help="100 patients")
    args = ap.parse_args()
    args.n = args.n or ([100] if args.quick else [200, 2000])
    header(itk_threads="not used")
    rows = []
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        img = nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4))
        for seq in ("swi", "dwi", "adc", "flair"):
            nib.save(img, d / f"{seq}.nii.gz")
        for n in args.n:
            sheet = d / f"sheet_{n}.tsv"
            pd.DataFrame({"subject": [f"p{i:05d}" for i in range(n)], "center": [f"c{i % 8}" for i in range(n)],
                          "split": "", "swi": "swi.nii.gz", "phase": "", "t2star": "", "dwi": "dwi.nii.gz",
                          "adc": "adc.nii.gz", "flair": "flair.nii.gz", "t1": "", "thrombus_mask": "",
                          "infarct_mask": ""}).to_csv(sheet, sep="\t", index=False)
            cmd = [sys.executable, "-m", "snakemake", "-n", "-q", "-s", str(REPO / "Snakefile"),
                   "--directory", str(d / f"run{n}"), "--configfile", str(REPO / "config/config.yaml"),
                   "--config", "cohort=sheet", f"samples={sheet}"]
            t = time.perf_counter()
            res = subprocess.run(cmd, capture_output=True, text=True, env=os.environ | {"SLURM_CONF": "/nonexistent"})
            dt = time.perf_counter() - t
            if res.returncode:
                print(res.stdout[-2000:], res.stderr[-2000:])
                raise SystemExit(f"dry run failed for n={n}")
            rows.append((n, dt))
    print("| patients | dry-run DAG build (s) |")
    print("|---:|---:|")
    for n, dt in rows:
        print(f"| {n} | {dt:.1f} |")


if __name__ == "__main__":
    main()
