"""Benchmark of ``thrombseg predict`` (one new patient) and of lesion-guided post-processing.

    .venv/bin/python benchmarks/infer.py [--results results] [--experiment upattllstm_gmd] [--n 4]
        [--threads 2] [--out DIR] [--quick]

With a demo run (``make demo`` -> ``results/``) it times the demo's trained models on its own test
patients. Without one (a fresh clone) it builds a stand-in run in a temporary folder: a synthetic
cohort of one patient per center (seed 0), the configured thrombus and infarct networks with their
initial (untrained) weights, no Nyul landmarks (z-score only). The network and preprocessing times
are then those of the demo's architectures and grids; post-processing works on an untrained map, so
its time and the thrombus volume are not the demo's, and table 2 (which needs the demo's metrics)
is left out. ``--quick``: one patient instead of 4.

Prints (and writes as TSV under --out):
 1. per synthetic test patient with 4+ sequences (split ``test`` in ``splits/<protocol>.tsv``), the
    seconds of each step of :func:`thrombseg.inference.patient.predict_patient` run on the raw
    synthetic NIfTIs with the workflow's models, landmarks and settings: ingest, preprocess,
    harmonize (the preprocessing part), thrombus model, infarct model, post-processing (the inference
    part; target < 10 s), writing + back to native space, total, and the peak resident memory. Each
    patient runs in a fresh process so that its peak memory is its own, with OMP_WAIT_POLICY=passive
    by default (see docs/decisions.md).
 2. post-processing before/after on the test split (``metrics/<experiment>/per_subject.tsv``): Dice,
    detection rate, false-positive components and volume per center and overall, all sequences.
Timings depend on the machine's load: run it on a quiet machine for numbers to compare.
torch, pandas and the pipeline are imported inside the functions that use them, so that ``--help``
and a missing prerequisite answer at once.

Run time on 2 CPU cores (AMD EPYC, shared machine), without a demo run: ``--quick`` (1 patient)
70-95 s, measured (about 12 s of it builds the stand-in); default (4 patients) about 4-6 minutes,
estimated from it (50-80 s per patient). With a demo run, about the same per patient (estimated).
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
from _common import header, shown, stop, write_atomic, write_tsv  # noqa: E402

from thrombseg.core.sequences import SEQUENCES as SEQS  # noqa: E402

DEMO_FILES = ("synthetic/subjects.tsv", "provenance/config.yaml")  # + models/*/thrombus/model.pt, splits/


def is_demo_run(res: Path) -> bool:
    return all((res / f).is_file() for f in DEMO_FILES) and any(res.glob("models/*/thrombus/model.pt")) \
        and (res / "splits").is_dir()


def build_stand_in(res: Path, config: Path) -> None:
    """A results folder with what :func:`timing_table` reads, for a clone without a demo run (see module doc)."""
    import pandas as pd
    import torch
    import yaml

    from thrombseg.core.layout import Layout
    from thrombseg.models.checkpoint import build_network, export, save_checkpoint
    from thrombseg.plan import experiment_settings, first_thrombseg_experiment
    from thrombseg.synth import generate_cohort
    from thrombseg.training.config import TrainConfig

    conf = yaml.safe_load(config.read_text())
    training = conf["training"]
    exp = first_thrombseg_experiment(training)
    protocol = training["experiments"][exp]["protocol"]
    sheet = generate_cohort(res / "synthetic", n_per_center=1, seed=0, size="demo", n_jobs=2)
    subjects = pd.read_csv(sheet, sep="\t", dtype=str)
    write_tsv(subjects[["subject", "center"]].assign(split="test"), res / "splits" / f"{protocol}.tsv")
    write_atomic(res / "provenance" / "config.yaml", yaml.safe_dump(conf))
    write_atomic(Path(Layout(res).landmarks(protocol)),
                 json.dumps({"method": "none: benchmark stand-in without a demo run", "landmarks": {}}))
    for target, folder in (("thrombus", res / "models" / exp / "thrombus"),
                           ("infarct", res / "models" / "infarct" / protocol)):
        cfg = TrainConfig.from_dict(experiment_settings(training, exp, target)[0] | {"device": "cpu"})
        torch.manual_seed(cfg.seed)
        folder.mkdir(parents=True, exist_ok=True)
        save_checkpoint(export(build_network(cfg), cfg.to_dict(), {"untrained": True}), folder / "model.pt")


def one(args) -> dict:
    """Predict one patient with per-model timings (module functions wrapped, nothing reimplemented)."""
    import pandas as pd
    import torch

    from thrombseg.inference import postprocess, predict
    from thrombseg.inference.cli import results_files
    from thrombseg.inference.patient import predict_patient

    torch.set_num_threads(args.threads)
    res = Path(args.results)
    found = results_files(res, args.experiment)
    sheet = res / "synthetic" / "subjects.tsv"
    row = pd.read_csv(sheet, sep="\t", dtype=str).fillna("").set_index("subject").loc[args.one]
    images = {s: sheet.parent / row[s] for s in SEQS if row[s]}
    spent = {"thrombus": 0.0, "infarct": 0.0, "postprocess": 0.0}
    prob_fn, post_fn = predict.predict_probabilities, postprocess.postprocess_thrombus

    def timed_prob(model, *a, **k):
        t = time.perf_counter()
        try:
            return prob_fn(model, *a, **k)
        finally:
            spent["thrombus" if model.spec.target == "thrombus" else "infarct"] += time.perf_counter() - t

    def timed_post(*a, **k):
        t = time.perf_counter()
        try:
            return post_fn(*a, **k)
        finally:
            spent["postprocess"] += time.perf_counter() - t

    predict.predict_probabilities, postprocess.postprocess_thrombus = timed_prob, timed_post
    icfg = predict.inference_settings(found["inference"], found["postprocess"], subsets="full", device="cpu")
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
        # OpenMP's default busy-wait slows torch down badly when another process shares the cores
        env = dict(os.environ, ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=str(args.threads),
                   OMP_NUM_THREADS=str(args.threads), OMP_WAIT_POLICY=args.omp_wait_policy)
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if out.returncode:
            sys.exit(f"{sub}: {(out.stderr.strip().splitlines() or [f'exit code {out.returncode}'])[-1]}")
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
    p.add_argument("--results", default=None,
                   help="a demo run (default: results/ if it holds one, else a stand-in, see the module doc)")
    p.add_argument("--config", type=Path, default=ROOT / "config" / "config.yaml", help="for the stand-in")
    p.add_argument("--experiment", default=None, help="default: the only trained one")
    p.add_argument("--n", type=int, default=None, help="test patients to time (default 4, --quick 1)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--omp-wait-policy", choices=["passive", "active"], default="passive",
                   help="OpenMP wait policy of the timed processes (active: OpenMP's default)")
    p.add_argument("--out", type=Path, help="write the tables as TSV here")
    p.add_argument("--quick", action="store_true", help="one patient")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: time one patient in this process
    args = p.parse_args()
    if args.one:
        print(json.dumps(one(args)))
        return
    args.n = args.n or (1 if args.quick else 4)
    if args.results is not None and not is_demo_run(Path(args.results)):
        stop(f"{args.results} is not a finished demo run (needs {', '.join(DEMO_FILES)}, splits/ and a trained "
             "thrombus model): run `make demo` first, or leave --results out to time untrained stand-in models")
    import pandas as pd
    import torch

    from thrombseg.core.errors import UserError
    from thrombseg.inference.cli import results_files
    from thrombseg.preprocessing.settings import resolve_config

    torch.set_num_threads(args.threads)
    pd.set_option("display.width", 250)
    with tempfile.TemporaryDirectory(prefix="thrombseg-bench-infer-") as td:
        demo = args.results is not None or is_demo_run(ROOT / "results")
        t = time.perf_counter()
        if demo:
            args.results = args.results or str(ROOT / "results")
        else:
            args.results = str(Path(td) / "results")
            build_stand_in(Path(args.results), args.config)
        try:  # several trained experiments and no --experiment, say
            found = results_files(args.results, args.experiment)
        except UserError as exc:
            stop(str(exc))
        pre = resolve_config(found["preprocess"])
        header(itk_threads="1 (preprocess.deterministic)" if pre["deterministic"] else args.threads)
        if demo:
            print(f"demo run: {shown(args.results)}")
        else:
            print(f"no demo run in {shown(ROOT / 'results')} (`make demo` makes one): stand-in with UNTRAINED "
                  f"models on a 4-patient synthetic cohort (built in {time.perf_counter() - t:.0f} s); network and "
                  "preprocessing times are the demo's architectures', post-processing times and volumes are not")
        tables = {"predict_timings": timing_table(args)}
        metrics = Path(args.results) / "metrics" / found["experiment"] / "per_subject.tsv"
        if metrics.is_file():
            tables["postprocess_before_after"] = postprocess_table(args)
    print_tables(tables, args, demo, metrics)


def print_tables(tables: dict, args, demo: bool, metrics: Path) -> None:
    """Print (and with --out write) the tables; say why the post-processing table is left out."""
    titles = {"predict_timings": f"thrombseg predict per patient, seconds ({args.threads} threads, CPU, "
                                 f"OMP_WAIT_POLICY={args.omp_wait_policy})",
              "postprocess_before_after": "post-processing before/after, synthetic test split, all sequences"}
    for name, df in tables.items():
        print(f"\n## {titles[name]}\n")
        print(df.to_string(index=False, float_format=lambda x: f"{x:.2f}"))
        if args.out:
            write_tsv(df, args.out / f"{name}.tsv")
    if "postprocess_before_after" not in tables:
        why = f"{shown(metrics)} not found (a finished demo run has it)" if demo else "needs a demo run's metrics"
        print(f"\n## {titles['postprocess_before_after']}\n\nleft out: {why}: `make demo`")


if __name__ == "__main__":
    main()
