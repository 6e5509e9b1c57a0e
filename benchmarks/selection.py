"""Which thrombus component to keep: the post-processing rules on patients no model has seen.

    .venv/bin/python benchmarks/selection.py --results results --cohort /tmp/unseen/results
        [--experiment upattllstm_gmd] [--threads 2] [--out DIR]

``--cohort`` is another synthetic cohort run through the workflow up to harmonization, e.g.

    printf 'results: /tmp/unseen/results\\nsynthetic: {n_per_center: 4, seed: 1, size: demo}\\n' > unseen.yaml
    .venv/bin/snakemake --cores 2 --configfile config/config.yaml unseen.yaml --until harmonize

(its intensities are harmonized with landmarks learned on its own training split). Every one of its
patients is predicted once, with all its sequences, by ``--results``' thrombus and infarct models;
each rule then post-processes the same probability maps. Prints, per rule, how many true thrombi the
kept component hits, the mean Dice and the false-positive components per patient. These patients
are outside the demo's splits, so a rule can be chosen here without looking at its test split.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
import thrombseg  # noqa: E402,F401  (before torch: OMP_WAIT_POLICY)

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

    from thrombseg.inference.predict import InferenceConfig, load_checked
    from thrombseg.inference.tune import raw_maps, score_maps
    from thrombseg.training.data import load_case

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="results", help="the trained run (models)")
    ap.add_argument("--cohort", required=True, help="results folder of the unseen cohort (harmonized/, splits/)")
    ap.add_argument("--experiment", default="upattllstm_gmd")
    ap.add_argument("--protocol", default="multicentric")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="folder for selection.tsv")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    res, cohort = Path(a.results), Path(a.cohort)
    thr = load_checked(res / "models" / a.experiment / "thrombus" / "model.pt", "cpu")
    inf = load_checked(res / "models" / "infarct" / a.protocol / "model.pt", "cpu", "infarct")
    subjects = pd.read_csv(cohort / "splits" / f"{a.protocol}.tsv", sep="\t")
    cases = [load_case(cohort / "harmonized" / r["subject"], r["subject"], r["center"]) for _, r in subjects.iterrows()]
    maps = raw_maps(cases, thr, inf)  # each patient predicted once; every rule post-processes the same maps
    rows = []
    for name, over in RULES:
        over = dict(over)
        use = [(c, p, None) for c, p, _ in maps] if over.pop("_no_infarct", False) else maps
        for (case, _, _), m in zip(use, score_maps(use, InferenceConfig(**over))):
            rows.append({"rule": name, "subject": case.subject, "center": case.center, "detected": m["detected"],
                         "dice": m["dice"], "n_fp_components": m["n_fp_components"]})
    df = pd.DataFrame(rows)
    table = df.groupby("rule", sort=False).agg(
        detected=("detected", "sum"), patients=("detected", "size"), dice=("dice", "mean"),
        fp_components=("n_fp_components", "mean"))
    table["detected"] = table["detected"].astype(int)
    print(f"thrombus model {res}/models/{a.experiment}; {len(subjects)} unseen patients from {cohort}")
    print(table.round(3).to_string())
    if a.out:
        Path(a.out).mkdir(parents=True, exist_ok=True)
        df.to_csv(Path(a.out) / "selection.tsv", sep="\t", index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
