"""Which thrombus component to keep: the post-processing rules on patients no model has seen.

    .venv/bin/python benchmarks/selection.py [--results results] [--cohort results/benchmarks/unseen]
        [--experiment upattllstm_gmd] [--threads 2] [--out DIR] [--quick]

Needs two things it does not build (without them it stops with one line naming the commands): a
trained demo run in ``--results`` (``make demo``), and ``--cohort``, another synthetic cohort (seed
1, 16 patients) run through the workflow up to harmonization:

    .venv/bin/snakemake --cores 2 --configfile config/config.yaml benchmarks/unseen.yaml --until harmonize

(about 10 minutes on 2 cores, estimated from the demo's per-patient preprocessing; its intensities
are harmonized with landmarks learned on its own training split). Every one of its
patients is predicted once, with all its sequences, by ``--results``' thrombus and infarct models;
each rule then post-processes the same probability maps. Prints, per rule, how many true thrombi the
kept component hits, the mean Dice and the false-positive components per patient. These patients
are outside the demo's splits, so a rule can be chosen here without looking at its test split.
``--quick``: the cohort's first patient of each center (4 instead of 16).
torch, pandas and the pipeline are imported inside the functions that use them, so that ``--help``
and a missing prerequisite answer at once.

Run time on 2 CPU cores, estimated (needs a demo run, not measured in this form): default about
3 minutes (16 patients, each predicted once by both models); ``--quick`` about 1 minute.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from _common import header, shown, stop, write_tsv  # noqa: E402

import thrombseg  # noqa: E402,F401  (before torch: OMP_WAIT_POLICY)

UNSEEN = "snakemake --cores 2 --configfile config/config.yaml benchmarks/unseen.yaml --until harmonize"

# (name, InferenceConfig overrides); the library default is the paper's nearest-component rule
RULES = [
    ("nearest, 20 voxels", {}),
    ("nearest, 20 mm3", {"min_volume_mm3": 20.0}),
    ("proximity 20 mm, 20 voxels", {"proximity_mm": 20.0}),
    ("proximity 20 mm, 20 mm3", {"proximity_mm": 20.0, "min_volume_mm3": 20.0}),
    ("proximity 20 mm, 40 mm3", {"proximity_mm": 20.0, "min_volume_mm3": 40.0}),
    ("proximity 40 mm, 20 mm3", {"proximity_mm": 40.0, "min_volume_mm3": 20.0}),
    ("nearest, 20 mm3, same side 10 mm", {"min_volume_mm3": 20.0, "same_side_mm": 10.0}),
    ("proximity 20 mm, 20 mm3, same side 10 mm", {"proximity_mm": 20.0, "min_volume_mm3": 20.0, "same_side_mm": 10.0}),
    ("most confident (no infarct)", {"min_volume_mm3": 20.0, "_no_infarct": True}),
    ("raw map >= 0.5 (ceiling)", {"postprocess": False}),  # every component: what a selection can keep
]


def main(argv=None) -> int:
    import pandas as pd
    import torch

    from thrombseg.core.case import load_case
    from thrombseg.inference.predict import load_checked
    from thrombseg.inference.settings import InferenceError
    from thrombseg.inference.tune import raw_maps

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default=str(ROOT / "results"), help="the trained run (models)")
    ap.add_argument("--cohort", default=str(ROOT / "results" / "benchmarks" / "unseen"),
                    help="results folder of the unseen cohort (harmonized/, splits/)")
    ap.add_argument("--experiment", default="upattllstm_gmd")
    ap.add_argument("--protocol", default="multicentric")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="folder for selection.tsv")
    ap.add_argument("--quick", action="store_true", help="one unseen patient per center")
    a = ap.parse_args(argv)
    res, cohort = Path(a.results), Path(a.cohort)
    models = [res / "models" / a.experiment / "thrombus" / "model.pt",
              res / "models" / "infarct" / a.protocol / "model.pt"]
    splits = cohort / "splits" / f"{a.protocol}.tsv"
    missing = [shown(p) for p in models if not p.is_file()]
    if missing:
        stop(f"needs a trained demo run ({', '.join(missing)} not found): run `make demo`, then "
             f"`.venv/bin/{UNSEEN}` for the unseen cohort")
    harmonized = cohort / "harmonized" / "multicentric"  # the unseen run's protocol
    if not splits.is_file() or not harmonized.is_dir():
        stop(f"needs the unseen cohort harmonized in {shown(cohort)} ({shown(splits)} not found): "
             f"run `.venv/bin/{UNSEEN}`")
    torch.set_num_threads(a.threads)
    header(itk_threads="not used")
    try:
        thrombus = load_checked(models[0], "cpu")
        infarct = load_checked(models[1], "cpu", "infarct")
    except InferenceError as exc:
        stop(str(exc))
    subjects = pd.read_csv(splits, sep="\t")
    if a.quick:
        subjects = subjects.groupby("center", sort=True).head(1)
    missing = [s for s in subjects["subject"] if not (harmonized / s).is_dir()]
    if missing:
        stop(f"{shown(harmonized)}: {', '.join(missing)} not harmonized: run `.venv/bin/{UNSEEN}`")
    cases = [load_case(harmonized / r["subject"], r["subject"], r["center"]) for _, r in subjects.iterrows()]
    df = score_rules(raw_maps(cases, thrombus, infarct))  # each patient predicted once, every rule on the same maps
    table = df.groupby("rule", sort=False).agg(
        detected=("detected", "sum"), patients=("detected", "size"), dice=("dice", "mean"),
        fp_components=("n_fp_components", "mean"))
    table["detected"] = table["detected"].astype(int)
    print(f"thrombus model {res}/models/{a.experiment}; {len(subjects)} unseen patients from {cohort}")
    print(table.round(3).to_string())
    if a.out:
        write_tsv(df, Path(a.out) / "selection.tsv")
    return 0


def score_rules(maps):
    """One row per rule and patient: detection, Dice and false-positive components of the kept mask."""
    import pandas as pd

    from thrombseg.inference.settings import InferenceConfig
    from thrombseg.inference.tune import score_maps

    rows = []
    for name, overrides in RULES:
        overrides = dict(overrides)
        use = [(c, p, None) for c, p, _ in maps] if overrides.pop("_no_infarct", False) else maps
        for (case, _, _), m in zip(use, score_maps(use, InferenceConfig(**overrides))):
            rows.append({"rule": name, "subject": case.subject, "center": case.center, "detected": m["detected"],
                         "dice": m["dice"], "n_fp_components": m["n_fp_components"]})
    return pd.DataFrame(rows)


if __name__ == "__main__":
    sys.exit(main())
