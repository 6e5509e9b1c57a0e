"""Paired comparison of trained experiments on patients none of them has seen.

    .venv/bin/python benchmarks/compare.py [--results results] [--cohort results/benchmarks/unseen48]
        [--experiments A B ...] [--train-windows E] [--subsets leave-one-out] [--threads 2]
        [--out DIR] [--per-center N] [--rule E] [--quick]

Every experiment's thrombus model (with its protocol's infarct model, harmonization landmarks and
tuned post-processing, as ``thrombseg predict --results`` uses them; an nnU-Net baseline's final
checkpoint through nnU-Net's own predictor, as rule nnunet_predict uses it) predicts the same unseen
patients: another synthetic cohort (seed 1, 12 per center = 48 patients, all four centers), run
through the workflow up to preprocessing only,

    .venv/bin/snakemake --cores 2 --configfile config/config.yaml benchmarks/unseen48.yaml --until preprocess

and harmonized here with each experiment's own landmarks. ``--train-windows E`` adds the arm
``E+train_windows``: E's model file with its Logic-LSTM transfer windows sized for its training crop
(what a model trained by this version does) instead of for each input, for a model file of an
earlier version. ``--rule E`` adds the arm ``E+rule``: E's model files and tuned post-processing with
the paper's selection (nearest to the infarct) instead of the candidate scorer, so the scorer's
effect is measured on the same maps. The first arm is the reference A; for each other arm B it prints A - B with 95 %
bootstrap intervals (patients resampled) for Dice and false-positive components and an exact paired
test for detection (McNemar per sequence set, sign test over patients when sets are pooled),
overall, per center and per sequence set, and writes the tables as TSV under ``--out`` with the
report's ablation figure of the arms (``ablation.png``: the same paired intervals per number of
sequences withheld). The patient-level outcomes (``patient_level.tsv``) follow, per arm, with each
patient's own full set of sequences and pooled over every subset: detection (thrombus-positive
patients), false-positive components per patient, patient-level sensitivity and specificity, false
positives per negative patient and the presence AUC, with 95 % bootstrap intervals over patients, and
the targets of issue "hard negatives, candidate scoring" (detection >= 75 % with all sequences, <= 1
false-positive component per patient, specificity >= 80 %) checked on the means and on the
intervals. Each patient's prediction is timed (every subset, with the infarct model and
post-processing; the models loaded once beforehand): ``seconds.tsv``, and the means per arm printed
with the metrics.
A patient already predicted by an arm with the same model files, harmonized arrays and settings is
read back from ``--out``, so a rerun with one more arm costs that arm.
``--quick``: 2 patients per center, all sequences only.

Run time on 2 CPU cores (AMD EPYC): ``--subsets full`` on the demo model, 48 patients, 220 s per arm
including their harmonization (measured, one run alone on the machine); the default (leave-one-out, 6
subsets) 24 min for one UpAttLLSTM arm, measured beside a training job on the same cores (AttLLSTM
about 2 min per patient there); ``--quick`` (8 patients, all sequences) 43 s for one
arm, measured. The unseen cohort's preprocessing, once: 50 minutes on one core beside other jobs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from _common import header, shown, stop, write_tsv  # noqa: E402

import thrombseg  # noqa: E402,F401  (before torch: OMP_WAIT_POLICY)
from thrombseg.core.errors import positive_int  # noqa: E402

UNSEEN = "snakemake --cores 2 --configfile config/config.yaml benchmarks/unseen48.yaml --until preprocess"
TRAIN_WINDOWS = "+train_windows"
RULE = "+rule"
PATIENT_METRICS = ("detected", "n_fp_components", "patient_sensitivity", "patient_specificity",
                   "n_fp_components_per_negative", "presence_auc")
# issue "hard negatives, candidate scoring", with all sequences
# (metric as the summary table names it, bound, "min" | "max")
TARGETS = (("detection_rate", 0.75, "min"), ("n_fp_components", 1.0, "max"), ("patient_specificity", 0.80, "min"))


def _args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--results", type=Path, default=ROOT / "results")
    p.add_argument("--cohort", type=Path, default=ROOT / "results" / "benchmarks" / "unseen48")
    p.add_argument("--experiments", nargs="+", help="default: every trained experiment")
    p.add_argument("--train-windows", metavar="E", help="add the arm E+train_windows (see above)")
    p.add_argument("--subsets", default="leave-one-out", choices=("full", "leave-one-out", "all"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--n-boot", type=int, default=2000)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks" / "compare")
    p.add_argument("--per-center", type=positive_int, metavar="N", help="the first N patients of each center only")
    p.add_argument("--rule", metavar="E", help="add the arm E+rule: E with the paper's selection rule (see above)")
    p.add_argument("--quick", action="store_true")
    return p.parse_args(argv)


def arms(args) -> list[tuple[str, str]]:
    """(arm name, experiment whose files it uses), the reference first."""
    from thrombseg.inference.cli import trained_experiments

    trained = trained_experiments(args.results)
    names = args.experiments or trained
    missing = [e for e in names if e not in trained]
    if missing or not names:
        what = f"{', '.join(missing)} not trained" if missing else "no trained experiment"
        stop(f"needs trained models: {shown(args.results / 'models')}: {what} (trained: {', '.join(trained) or 'none'}): "
             "run `make demo` (or the workflow with your config) first")
    out = [(e, e) for e in names]
    if args.train_windows:
        if args.train_windows not in trained:
            stop(f"--train-windows {args.train_windows}: not a trained experiment ({trained})")
        out.append((args.train_windows + TRAIN_WINDOWS, args.train_windows))
    if args.rule:
        if args.rule not in trained:
            stop(f"--rule {args.rule}: not a trained experiment ({trained})")
        out.append((args.rule + RULE, args.rule))
    return out


def unseen_patients(args):
    """``subject, center`` of the unseen cohort's preprocessed patients (``--quick``: 2 per center)."""
    import pandas as pd

    sheet = args.cohort / "synthetic" / "subjects.tsv"
    pre = args.cohort / "preprocessed"
    if not sheet.is_file():
        stop(f"needs the unseen cohort in {shown(args.cohort)} ({shown(sheet)} not found): after `make demo`, "
             f"run `.venv/bin/{UNSEEN}`")
    table = pd.read_csv(sheet, sep="\t", dtype=str, keep_default_na=False)[["subject", "center"]]
    missing = [s for s in table["subject"] if not (pre / s).is_dir()]
    if missing:
        stop(f"{shown(pre)}: {len(missing)} patient(s) not preprocessed ({', '.join(missing[:4])}...): "
             f"run `.venv/bin/{UNSEEN}`")
    per_center = 2 if args.quick else args.per_center
    return table.groupby("center", sort=True).head(per_center) if per_center else table


def arm_files(args, experiment: str, arm: str, work: Path) -> dict:
    """The experiment's files as ``thrombseg predict --results`` resolves them; the train-windows arm
    gets a copy of the model file marked as written by this version (windows sized for its crop)."""
    from thrombseg.inference.cli import results_files
    from thrombseg.models.checkpoint import FORMAT, load_checkpoint, save_checkpoint

    found = results_files(args.results, experiment)
    if arm.endswith(TRAIN_WINDOWS):
        if found["kind"] != "thrombseg":
            stop(f"--train-windows {experiment}: an nnU-Net baseline has no Logic-LSTM windows")
        blob = load_checkpoint(found["model"])
        target = work / arm / "model.pt"
        target.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(blob | {"thrombseg_format": FORMAT}, target)
        found = found | {"model": target}
    return found


def harmonized(args, patients, files: dict, work: Path) -> Path:
    """The unseen patients harmonized with the experiment's landmarks, cached under the digest of the
    landmarks and settings (another results folder's landmarks of the same protocol get their own)."""
    from thrombseg.preprocessing.harmonize import harmonize_subject

    landmarks = Path(files["landmarks"])
    key = hashlib.sha256(landmarks.read_bytes() + json.dumps(files["preprocess"], sort_keys=True).encode())
    folder = work / "harmonized" / f"{landmarks.parent.name}-{key.hexdigest()[:12]}"
    for subject in patients["subject"]:
        if not (folder / subject).is_dir():
            harmonize_subject(args.cohort / "preprocessed", subject, landmarks, folder, files["preprocess"])
    return folder


def _arm_key(files: dict, folder: Path, icfg) -> str:
    """Digest of what an arm's predictions depend on: its model files, harmonized arrays, settings."""
    import dataclasses

    h = hashlib.sha256(folder.name.encode() + json.dumps(dataclasses.asdict(icfg), sort_keys=True, default=str).encode())
    for f in (files["model"], files["infarct_model"]):
        h.update(Path(f).read_bytes() if f else b"-")
    return h.hexdigest()


def thrombus_model(files: dict, icfg):
    """The arm's thrombus model loaded once for every patient: thrombseg's ``model.pt``, or an nnU-Net
    checkpoint as a probability function (its own mirroring follows ``tta_flip``, as in rule
    nnunet_predict)."""
    import torch

    if files["kind"] != "nnunet":
        from thrombseg.inference.predict import load_checked

        return load_checked(files["model"], torch.device("cpu"), "thrombus")
    from thrombseg.baselines.nnunet.workflow import probability_model

    return probability_model(files["model"], torch.device("cpu"), use_mirroring=icfg.tta_flip)


def predict_arm(args, arm: str, files: dict, patients, folder: Path, work: Path):
    """Per-subject metric rows of one arm (every patient, every subset) and its seconds per patient; a
    patient predicted earlier with the same files and settings (its ``key.txt``) is read back with
    the seconds it took then, so adding an arm costs one arm."""
    import dataclasses
    import time

    import pandas as pd

    from thrombseg.core.io import write_text
    from thrombseg.inference.predict import inference_settings, predict_subject

    subsets = "full" if args.quick else args.subsets
    icfg = inference_settings(files["inference"], files["postprocess"], subsets=subsets, device="cpu")
    if arm.endswith(RULE):
        icfg = dataclasses.replace(icfg, selection="rule")
    key = _arm_key(files, folder, icfg)
    model = None
    rows, seconds = [], []
    for r in patients.itertuples():
        out = work / "predictions" / arm / r.subject
        done = out / "key.txt"
        if done.is_file() and done.read_text() == key and (out / "seconds.txt").is_file():
            rows.append(pd.read_csv(out / f"{r.subject}_metrics.tsv", sep="\t", keep_default_na=False,
                                    na_values=[""]).assign(experiment=arm))
            seconds.append(float((out / "seconds.txt").read_text()))
            continue
        model = model or thrombus_model(files, icfg)  # loaded once, outside the timing
        t0 = time.perf_counter()
        rows.append(predict_subject(folder, r.subject, r.center, model, files["infarct_model"], out, arm, icfg))
        seconds.append(time.perf_counter() - t0)
        write_text(f"{seconds[-1]:.2f}", out / "seconds.txt")
        write_text(key, done)
    timing = pd.DataFrame({"experiment": arm, "subject": patients["subject"].to_list(), "seconds": seconds,
                           "n_subsets": [len(t) for t in rows]})
    return pd.concat(rows, ignore_index=True), timing


def paired_tables(df, names: list[str], n_boot: int):
    """A - B for the reference A and every other arm B: overall, per center, per sequence set."""
    import pandas as pd

    from thrombseg.evaluation.paired import DEFAULT_METRICS, compare_by

    metrics = (*DEFAULT_METRICS, "patient_sensitivity", "patient_specificity")
    parts = [compare_by(df, names[0], b, by, metrics, n_boot=n_boot).assign(by=by or "all")
             for b in names[1:] for by in (None, "center", "sequence_set")]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def patient_level(df, names: list[str], n_boot: int):
    """:data:`PATIENT_METRICS` per arm with each patient's full set of sequences (``all``) and pooled
    over every subset (``pooled``), with bootstrap intervals over patients, and the :data:`TARGETS`."""
    import pandas as pd

    from thrombseg.evaluation.aggregate import summarize

    full = df["n_sequences"] == df.groupby(["experiment", "subject"])["n_sequences"].transform("max")
    parts = [summarize(rows, ["experiment"], list(PATIENT_METRICS), n_boot=n_boot).assign(sequences=which)
             for which, rows in (("all", df[full]), ("pooled", df))]
    table = pd.concat(parts, ignore_index=True)
    table["experiment"] = pd.Categorical(table["experiment"], names, ordered=True)
    table = table.sort_values(["experiment", "sequences"], kind="stable").reset_index(drop=True)
    table["target"] = ""
    for metric, bound, kind in TARGETS:
        at = (table["metric"] == metric) & (table["sequences"] == "all")
        for i in table.index[at]:
            mean, lo, hi = table.loc[i, ["mean", "ci_low", "ci_high"]]
            met = mean >= bound if kind == "min" else mean <= bound
            # the whole interval on the same side of the bound as the mean
            sure = (lo >= bound if met else hi < bound) if kind == "min" else (hi <= bound if met else lo > bound)
            table.loc[i, "target"] = (f"{'>=' if kind == 'min' else '<='} {bound:g}: "
                                      f"{'met' if met else 'missed'}{', interval too' if sure else ''}"
                                      if not pd.isna(mean) else "")
    return table


def figure(df, names: list[str], args) -> None:
    """The report's ablation figure of these arms: means per sequences withheld, and the paired
    differences reference - arm with the intervals printed above (``ablation.png``)."""
    from thrombseg.report.figures import plot_dropout_ablation

    plot_dropout_ablation(df, args.out / "ablation", {a: a for a in names}, reference=names[0], n_boot=args.n_boot)


def main(argv=None) -> int:
    import pandas as pd
    import torch

    args = _args(argv)
    chosen = arms(args)
    patients = unseen_patients(args)
    torch.set_num_threads(args.threads)
    header()
    work = args.out / "work"
    frames, timings = [], []
    for arm, experiment in chosen:
        files = arm_files(args, experiment, arm, work)
        folder = harmonized(args, patients, files, work)
        rows, timing = predict_arm(args, arm, files, patients, folder, work)
        frames.append(rows)
        timings.append(timing)
        print(f"{arm}: {len(patients)} patients predicted", file=sys.stderr, flush=True)
    df = pd.concat(frames, ignore_index=True)
    write_tsv(df, args.out / "per_subject.tsv")
    timing = pd.concat(timings, ignore_index=True)
    write_tsv(timing, args.out / "seconds.tsv")
    names = [a for a, _ in chosen]
    means = df.groupby("experiment", sort=False)[["dice", "detected", "n_fp_components"]].mean().loc[names]
    per_patient = timing.groupby("experiment", sort=False)["seconds"].mean().loc[names]
    means["s_per_patient"] = per_patient
    means["s_per_subset"] = (timing["seconds"] / timing["n_subsets"]).groupby(timing["experiment"], sort=False).mean()
    print(f"Unseen patients: {len(patients)} of {shown(args.cohort)} ({patients['center'].nunique()} centers), "
          f"subsets: {'full' if args.quick else args.subsets}, {args.threads} threads; means per arm over all rows, "
          "and seconds per patient (every subset; infarct model and post-processing included) and per subset:")
    print(means.to_string(float_format=lambda v: f"{v:.3f}"))
    level = patient_level(df, names, args.n_boot)
    write_tsv(level, args.out / "patient_level.tsv")
    print("\nPatient level (95 % bootstrap interval over patients; all = each patient's own full set of "
          "sequences, pooled = every subset):")
    print(level[["experiment", "sequences", "metric", "n_subjects", "mean", "ci_low", "ci_high", "target"]]
          .to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    table = paired_tables(df, names, args.n_boot)
    if len(table):
        write_tsv(table, args.out / "paired.tsv")
        shown_cols = ["comparison", "by", "group", "metric", "n_patients", "difference", "ci_low", "ci_high",
                      "a_only", "b_only", "p_value"]
        print("\nPaired differences A - B (95 % bootstrap interval over patients; detection: exact test):")
        print(table[shown_cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    figure(df, names, args)
    print(f"\ntables and figure: {shown(args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
