"""Benchmark of ``thrombseg predict`` (one new patient) and of lesion-guided post-processing.

    .venv/bin/python benchmarks/infer.py [--results results] [--experiment upattllstm_gmd] [--n 4]
        [--threads 2] [--out DIR]

Prints (and writes as TSV under --out):
 1. per synthetic test patient with 4+ sequences (split ``test`` in ``splits/<protocol>.tsv``), the
    seconds of each step of :func:`thrombseg.inference.patient.predict_patient` run on the raw
    synthetic NIfTIs with the workflow's models, landmarks and settings: ingest, preprocess,
    harmonize (the preprocessing part), thrombus model, infarct model, post-processing (the inference
    part; target < 10 s), writing + back to native space, total, and the peak resident memory. Each
    patient runs in a fresh process so that its peak memory is its own, with OMP_WAIT_POLICY=passive
    by default: with OpenMP's busy-waiting default, torch ran 5-10x slower whenever another process
    shared the 2 cores (measured on the dev machine).
 2. post-processing before/after on the test split (``metrics/<experiment>/per_subject.tsv``): Dice,
    detection rate, false-positive components and volume per center and overall, all sequences.
Timings depend on the machine's load: run it on a quiet machine for numbers to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from thrombseg.sheet import SEQUENCES as SEQS


def one(args) -> dict:
    """Predict one patient with per-model timings (module functions wrapped, nothing reimplemented)."""
    import pandas as pd
    import torch

    from thrombseg.inference import predict as P
    from thrombseg.inference.cli import results_files
    from thrombseg.inference.patient import predict_patient

    torch.set_num_threads(args.threads)
    res = Path(args.results)
    found = results_files(res, args.experiment)
    sheet = res / "synthetic" / "subjects.tsv"
    row = pd.read_csv(sheet, sep="\t", dtype=str).fillna("").set_index("subject").loc[args.one]
    images = {s: sheet.parent / row[s] for s in SEQS if row[s]}
    spent = {"thrombus": 0.0, "infarct": 0.0, "postprocess": 0.0}
    prob_fn, post_fn = P.predict_probabilities, P.postprocess_thrombus

    def timed_prob(model, model_cfg, *a, **k):
        t = time.perf_counter()
        try:
            return prob_fn(model, model_cfg, *a, **k)
        finally:
            spent["thrombus" if model_cfg.target == "thrombus" else "infarct"] += time.perf_counter() - t

    def timed_post(*a, **k):
        t = time.perf_counter()
        try:
            return post_fn(*a, **k)
        finally:
            spent["postprocess"] += time.perf_counter() - t

    P.predict_probabilities, P.postprocess_thrombus = timed_prob, timed_post
    icfg = P.inference_settings(found["inference"], found["postprocess"], subsets="full", device="cpu")
    pre = dict(found["preprocess"] or {}, threads=args.threads)
    with tempfile.TemporaryDirectory(prefix="thrombseg-bench-") as td:
        s = predict_patient(images, Path(td) / args.one, found["model"], found["landmarks"], found["infarct_model"],
                            pre, icfg, subject=args.one)
    t = s["timings_s"]
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"subject": args.one, "center": row["center"], "sequences": "+".join(s["sequences_used"]),
            "n_seq": len(images), "grid": "x".join(map(str, s["grid"]["shape"])),
            "ingest": t["ingest"], "preprocess": t["preprocess"], "harmonize": t["harmonize"],
            "thrombus": spent["thrombus"], "infarct": spent["infarct"], "postprocess": spent["postprocess"],
            "write+native": t["write_grid"] + t["native"], "total": t["total"],
            "preproc_part": t["ingest"] + t["preprocess"] + t["harmonize"],
            "inference_part": spent["thrombus"] + spent["infarct"] + spent["postprocess"],
            "peak_rss_mb": rss_mb, "thrombus_mm3": s["thrombus_volume_mm3"]}


def timing_table(args):
    import pandas as pd

    res = Path(args.results)
    sheet = pd.read_csv(res / "synthetic" / "subjects.tsv", sep="\t", dtype=str).fillna("")
    import yaml

    from thrombseg.inference.cli import results_files

    conf = yaml.safe_load((res / "provenance" / "config.yaml").read_text())
    exp = results_files(res, args.experiment)["experiment"]
    protocol = conf["training"]["experiments"][exp]["protocol"]
    split = pd.read_csv(res / "splits" / f"{protocol}.tsv", sep="\t", dtype=str)
    test = sheet[sheet["subject"].isin(split.loc[split["split"] == "test", "subject"])]
    test = test[test[list(SEQS)].ne("").sum(axis=1) >= 4]
    # one patient per center first, then the others, so a short run still spans the protocols
    test = test.assign(k=test.groupby("center").cumcount()).sort_values(["k", "subject"]).head(args.n)
    rows = []
    for sub in test["subject"]:
        cmd = [sys.executable, __file__, "--one", sub, "--results", str(res), "--threads", str(args.threads)]
        if args.experiment:
            cmd += ["--experiment", args.experiment]
        # OpenMP's default busy-wait makes torch 5-10x slower when another process shares the cores
        env = dict(os.environ, ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=str(args.threads),
                   OMP_NUM_THREADS=str(args.threads), OMP_WAIT_POLICY=args.omp_wait_policy)
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if out.returncode:
            sys.exit(f"{sub}: {(out.stderr.strip().splitlines() or ['exit code %d' % out.returncode])[-1]}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"  {sub}: {rows[-1]['total']:.1f} s", file=sys.stderr)
    df = pd.DataFrame(rows)
    num = df.select_dtypes("number").columns
    mean = df[num].mean().to_frame().T.assign(subject="mean", center="", sequences="", grid="")
    return pd.concat([df, mean[df.columns]], ignore_index=True)


def postprocess_table(args):
    import pandas as pd

    from thrombseg.inference.cli import results_files

    exp = results_files(args.results, args.experiment)["experiment"]
    df = pd.read_csv(Path(args.results) / "metrics" / exp / "per_subject.tsv", sep="\t")
    df = df[df["n_sequences"] == df.groupby("subject")["n_sequences"].transform("max")]  # all sequences
    pairs = {"dice": "raw_dice", "detected": "raw_detected", "n_fp_components": "raw_n_fp_components",
             "fp_volume_mm3": "raw_fp_volume_mm3"}

    def summ(g):
        out = {"n": len(g)}
        for after, before in pairs.items():
            out[f"{after} before"] = g[before].mean()
            out[f"{after} after"] = g[after].mean()
        return pd.Series(out)

    per = df.groupby("center").apply(summ, include_groups=False).reset_index()
    overall = summ(df).to_frame().T.assign(center="overall")
    return pd.concat([per, overall[per.columns]], ignore_index=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default=str(ROOT / "results"))
    p.add_argument("--experiment", default=None, help="default: the only trained one")
    p.add_argument("--n", type=int, default=4, help="test patients to time")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--omp-wait-policy", choices=["passive", "active"], default="passive",
                   help="OpenMP wait policy of the timed processes (active: OpenMP's default)")
    p.add_argument("--out", type=Path, help="write the tables as TSV here")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: time one patient in this process
    args = p.parse_args()
    if args.one:
        print(json.dumps(one(args)))
        return
    import pandas as pd

    pd.set_option("display.width", 250)
    tables = {"predict_timings": timing_table(args), "postprocess_before_after": postprocess_table(args)}
    titles = {"predict_timings": f"thrombseg predict per patient, seconds ({args.threads} threads, CPU, "
                                 f"OMP_WAIT_POLICY={args.omp_wait_policy})",
              "postprocess_before_after": "post-processing before/after, synthetic test split, all sequences"}
    for name, df in tables.items():
        print(f"\n## {titles[name]}\n")
        print(df.to_string(index=False, float_format=lambda x: f"{x:.2f}"))
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            df.to_csv(args.out / f"{name}.tsv", sep="\t", index=False, float_format="%.4f")


if __name__ == "__main__":
    main()
