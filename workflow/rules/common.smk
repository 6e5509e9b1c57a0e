# Shared setup: config validation, the cohort (synthetic or user sheet), center filter, targets.
import os
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

from thrombseg.config import ConfigError, validate_config
from thrombseg.sheet import SheetError, validate_sheet
from thrombseg.smk import use_this_python
from thrombseg.stages import stage_status

# Jobs inherit OMP_WAIT_POLICY=PASSIVE from importing thrombseg (see thrombseg/__init__.py).
# Rules' script steps must use this interpreter's environment (the project's venv) even when the
# user calls .venv/bin/snakemake without activating it.
use_this_python()

# The whole config, before any job: one line per problem (key path, bad value), no traceback.
# The schema's defaults are filled into `config` (the rules rely on them).
try:
    validate_config(config, "config", set_defaults=True)
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None

RESULTS = config["results"].rstrip("/")
LOGS = f"{RESULTS}/logs"
CENTERS_FILTER = [str(c) for c in config.get("centers") or []]


def _synthetic_cohort():
    """Subject -> center of the synthetic cohort, known before it is generated (ids are fixed)."""
    from thrombseg.synth import subject_ids

    return subject_ids(n_per_center=config["synthetic"]["n_per_center"])


if config["cohort"] == "synthetic":
    SHEET = f"{RESULTS}/synthetic/subjects.tsv"
    _cohort = _synthetic_cohort()
    _unknown = [c for c in CENTERS_FILTER if c not in set(_cohort.values())]
    if _unknown:
        raise WorkflowError(
            f"config 'centers': {_unknown} not in the synthetic cohort "
            f"(centers: {sorted(set(_cohort.values()))})"
        )
else:
    SHEET = config["samples"]
    try:
        # Structure and file existence at parse time (fast); voxel-level checks run in a rule.
        _df = validate_sheet(SHEET, centers=CENTERS_FILTER or None, check_images=False)
    except SheetError as exc:
        raise WorkflowError(str(exc)) from None
    _cohort = dict(zip(_df["subject"], _df["center"]))

SUBJECTS = sorted(s for s, c in _cohort.items() if not CENTERS_FILTER or c in CENTERS_FILTER)
CENTER_OF = {s: _cohort[s] for s in SUBJECTS}
CENTERS = sorted(set(CENTER_OF.values()))

wildcard_constraints:
    subject="[A-Za-z0-9]+",
    center="[A-Za-z0-9_-]+",

# Each stage's rule file appends its final outputs here; `rule all` requests them.
ALL_TARGETS = []


onstart:
    built = [s for s, ok, _ in stage_status(Path(workflow.basedir) / "workflow" / "rules") if ok]
    missing = [s for s, ok, _ in stage_status(Path(workflow.basedir) / "workflow" / "rules") if not ok]
    print(f"thrombseg: {len(SUBJECTS)} subject(s) in {len(CENTERS)} center(s); cohort={config['cohort']}")
    print(f"thrombseg: stages run by this workflow: {', '.join(built)}")
    if missing:
        print(f"thrombseg: stages NOT BUILT yet (nothing is produced for them): {', '.join(missing)}")


# ------------------------------------------------------------------ protocols and splits
# Splits depend only on (subject, center, sheet split, seed), all known at parse time, so every
# rule's inputs are static. They use the whole cohort, never the `centers` filter: a one-center
# rerun must reuse the models trained on everyone.
import pandas as pd

from thrombseg.training.splits import PROTOCOLS, assign_splits

_SPLIT_SEED = config.get("splits", {}).get("seed", 0)
_sheet_splits = _df["split"].tolist() if config["cohort"] == "sheet" else [""] * len(_cohort)
_COHORT_DF = pd.DataFrame({"subject": list(_cohort), "center": list(_cohort.values()), "split": _sheet_splits})


def protocol_id(protocol, center=None):
    """`multicentric`, `monocentric-<center>`, `leave-center-out-<center>`."""
    return protocol if not center else f"{protocol}-{center}"


def parse_protocol(pid):
    for p in PROTOCOLS:
        if pid == p or pid.startswith(f"{p}-"):
            return p, (pid[len(p) + 1:] or None)
    raise WorkflowError(f"unknown protocol {pid!r}; expected one of {PROTOCOLS}")


_SPLITS_CACHE = {}


def splits_of(pid):
    if pid not in _SPLITS_CACHE:
        protocol, center = parse_protocol(pid)
        try:
            _SPLITS_CACHE[pid] = assign_splits(_COHORT_DF, protocol, seed=_SPLIT_SEED, center=center)
        except ValueError as exc:
            raise WorkflowError(str(exc)) from None
    return _SPLITS_CACHE[pid]


def subjects_in(pid, *splits):
    df = splits_of(pid)
    return sorted(df.loc[df["split"].isin(splits), "subject"])


# ------------------------------------------------------------------ helpers of training.smk
from thrombseg.plan import experiment_settings


TRAIN = config["training"]


EXPERIMENTS = sorted(TRAIN["experiments"])


def experiment_pid(experiment):
    return TRAIN["experiments"][experiment]["protocol"]


# ------------------------------------------------------------------ single-center reruns
# `--config centers=[X]` restricts the run to X's patients. Cohort-level outputs (metrics, figures,
# tables, provenance) then go to results/selections/centers-X/ so the full run's are never
# overwritten, and when every model and the harmonization landmarks already exist they are
# *reused as given files*: the training and landmark rules are not defined at all, so nothing the
# selection re-runs (`--forcerun ingest`) can make them out of date and retrain.
SELECTION = "centers-" + "-".join(sorted(CENTERS_FILTER)) if CENTERS_FILTER else ""
AGG = f"{RESULTS}/selections/{SELECTION}" if SELECTION else RESULTS
AGG_LOGS = f"{AGG}/logs"  # logs of the cohort-level rules
LANDMARKS = f"{RESULTS}/harmonization/landmarks.json"


def thrombus_model(experiment):
    return f"{RESULTS}/models/{experiment}/thrombus/model.pt"


def infarct_model(pid):
    return f"{RESULTS}/models/infarct/{pid}/model.pt"


def tuned_postprocess(experiment):
    """Post-processing settings chosen on the experiment's validation patients (rule tune_postprocess)."""
    return f"{RESULTS}/models/{experiment}/thrombus/postprocess.json"


from thrombseg.plan import tune_grid

COHORT_CENTER = dict(_cohort)  # every patient's center, whatever the `centers` filter


def tunes(experiment):
    """Whether the experiment's post-processing is chosen on validation patients (it needs some)."""
    return bool(tune_grid(config["inference"])) and bool(subjects_in(experiment_pid(experiment), "val"))


_FROZEN = [LANDMARKS, *(thrombus_model(e) for e in EXPERIMENTS),
           *(infarct_model(experiment_pid(e)) for e in EXPERIMENTS),
           *(tuned_postprocess(e) for e in EXPERIMENTS if tunes(e))]
REUSE_MODELS = bool(SELECTION) and all(os.path.exists(p) for p in _FROZEN)
if SELECTION and not REUSE_MODELS:
    print(f"thrombseg: centers={CENTERS_FILTER} but some models/landmarks are missing "
          f"({', '.join(p for p in _FROZEN if not os.path.exists(p))}): they are trained on the whole "
          "cohort first", file=sys.stderr)


def frozen(path):
    """A model or landmarks file as an input: ignore its age when it is reused as given."""
    return ancient(path) if REUSE_MODELS else path


def _train_resources():
    res = {"mem_mb": TRAIN["mem_mb"], "runtime": TRAIN["runtime_min"]}
    if TRAIN["gpus"] > 0:
        res["gpu"] = TRAIN["gpus"]
    return res


def _harmonized_for(pid):
    return expand(rules.harmonize.output, subject=subjects_in(pid, "train", "val"))


# ------------------------------------------------------------------ helpers of preprocessing.smk
HARMONIZE_PID = config["harmonization"]["protocol"]


PRE_THREADS = config["preprocess"].get("threads", 2)


def _center_subjects(w):
    return [s for s in SUBJECTS if CENTER_OF[s] == w.center]


# ------------------------------------------------------------------ helpers of inference.smk
def _test_subjects(experiment):
    """Test patients of the experiment's protocol, restricted to the `centers` filter."""
    return [s for s in subjects_in(experiment_pid(experiment), "test") if s in CENTER_OF]


# ------------------------------------------------------------------ helpers of report.smk
from thrombseg.report.figures import experiment_labels as _experiment_labels


FIGURES = f"{AGG}/figures"


TABLES = f"{AGG}/tables"


REPORT_EXPERIMENTS = [e for e in EXPERIMENTS if _test_subjects(e)]


EXPERIMENT_LABELS = _experiment_labels(config["training"])


REPORT_N_BOOT = config["evaluation"].get("n_boot", 2000)
# Image-derivative folders that get a BIDS-derivatives dataset_description.json.


DERIVATIVES = {
    "preprocessed": "thrombseg preprocessed images (skull-stripped, co-registered, bias-corrected)",
    "harmonized": "thrombseg site-harmonized arrays on the reference grid",
    "predictions": "thrombseg thrombus and infarct predictions",
}


def _fig(name, caption, subcategory="{experiment}", experiment="{experiment}"):
    return report(
        f"{FIGURES}/{{experiment}}/{name}.png",
        category="5. Figures",
        subcategory=subcategory,
        caption=f"../report/{caption}.rst",
        labels={"figure": name.replace("_", " "), "experiment": experiment},
    )


def _test_centers(experiment):
    return sorted({CENTER_OF[s] for s in _test_subjects(experiment)})


def _all_fig(name, caption):
    return report(
        f"{FIGURES}/{name}.png",
        category="5. Figures",
        subcategory="All experiments",
        caption=f"../report/{caption}.rst",
        labels={"figure": name.replace("_", " "), "experiment": "all"},
    )


def _hdbet_weights_dir():
    from thrombseg.preprocessing.skullstrip import hdbet_default_folder

    return str((config["preprocess"].get("skullstrip") or {}).get("hdbet_weights") or hdbet_default_folder())


HDBET_WEIGHTS_DIR = _hdbet_weights_dir()


# Patients whose preprocessing a run asks for: everyone, or when a single-center rerun reuses the
# models, only the selection's test patients (re-preprocessing its training patients would make
# the models look out of date to the next full run).
PREPROCESS_SUBJECTS = (
    sorted({s for e in EXPERIMENTS for s in _test_subjects(e)}) if REUSE_MODELS else SUBJECTS
)
