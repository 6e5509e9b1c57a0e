# Shared setup: config validation, the cohort (synthetic or user sheet), then the run's plan
# (thrombseg.plan: splits, reuse decisions, targets) and layout (thrombseg.core.layout: paths).
# This file is glue: the policy lives in the library, where it is unit-tested. Nothing imported
# here loads torch or matplotlib, so the DAG parses fast and on a login node.
import re
import sys
from pathlib import Path

from HD_BET.paths import folder_with_parameter_files as HDBET_DEFAULT_WEIGHTS
from snakemake.exceptions import WorkflowError

from thrombseg.config import ConfigError, validate_config
from thrombseg.plan import Plan, cohort_table, experiment_labels, experiment_settings, train_resources
from thrombseg.sheet import SheetError, validate_sheet
from thrombseg.smk import use_this_python
from thrombseg.synth import subject_ids, thrombus_presence
from thrombseg.training.splits import assign_splits

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


def _cohort():
    """Every patient of the cohort (subject, center, sheet split), whatever the `centers` filter."""
    if config["cohort"] == "synthetic":  # ids and thrombus presence are fixed: known before the cohort is generated
        synth = config["synthetic"]
        present = thrombus_presence(n_per_center=synth["n_per_center"], seed=synth["seed"],
                                    negative_share=synth["negative_share"])
        return cohort_table(subject_ids(n_per_center=synth["n_per_center"]), present=list(present.values()))
    try:
        # Structure and file existence at parse time (fast); voxel-level checks run in a rule.
        centers = [str(c) for c in config.get("centers") or []]
        sheet = validate_sheet(config["samples"], centers=centers or None, check_images=False)
    except SheetError as exc:
        raise WorkflowError(str(exc)) from None
    return cohort_table(dict(zip(sheet["subject"], sheet["center"])), sheet["split"].tolist(),
                        sheet["thrombus_present"].tolist())


PLAN = Plan(config, _cohort(), assign_splits)
LAYOUT = PLAN.layout
SHEET = LAYOUT.synthetic_sheet if config["cohort"] == "synthetic" else config["samples"]
if config["cohort"] == "synthetic" and PLAN.unknown_centers():
    raise WorkflowError(
        f"config 'centers': {PLAN.unknown_centers()} not in the synthetic cohort "
        f"(centers: {sorted(set(PLAN.cohort_center.values()))})"
    )

LOGS = LAYOUT.logs
AGG_LOGS = LAYOUT.agg_logs  # logs of the cohort-level rules
SUBJECTS = PLAN.subjects
CENTER_OF = PLAN.center_of
CENTERS = PLAN.centers
COHORT_CENTER = PLAN.cohort_center  # every patient's center, whatever the `centers` filter
EXPERIMENTS = PLAN.experiments
TRAIN = config["training"]

wildcard_constraints:
    subject="[A-Za-z0-9]+",
    center="[A-Za-z0-9_-]+",
    pid="[A-Za-z0-9_-]+",

# Each stage's rule file appends its final outputs here; `rule all` requests them.
ALL_TARGETS = []


onstart:
    print(f"thrombseg: {len(SUBJECTS)} subject(s) in {len(CENTERS)} center(s); cohort={config['cohort']}")


# ------------------------------------------------------------------ protocols and splits
# Splits depend only on (subject, center, sheet split, seed), all known at parse time, so every
# rule's inputs are static. They use the whole cohort: a one-center rerun reuses the models.
def _plan(method, *args):
    """A Plan decision, its ValueError (unknown protocol or center) as Snakemake's one-line error."""
    try:
        return method(*args)
    except ValueError as exc:
        raise WorkflowError(str(exc)) from None


def splits_of(pid):
    return _plan(PLAN.splits_of, pid)


def subjects_in(pid, *splits):
    return _plan(PLAN.subjects_in, pid, *splits)


def experiment_pid(experiment):
    return PLAN.experiment_pid(experiment)


def tunes(experiment):
    return _plan(PLAN.tunes, experiment)


def _test_subjects(experiment):
    return _plan(PLAN.test_subjects, experiment)


def _test_centers(experiment):
    return _plan(PLAN.test_centers, experiment)


def _center_subjects(w):
    return PLAN.center_subjects(w.center)


def _harmonized_for(pid):
    return [LAYOUT.harmonized(pid, s) for s in subjects_in(pid, "train", "val")]


# ------------------------------------------------------------------ which model an experiment trains
# thrombseg's networks (train_thrombus) or the nnU-Net baseline (`model = nnunet`, nnunet.smk).
# Rules producing the same files for either kind (predict, tune_postprocess) are told apart by the
# experiment wildcard's constraint.
THROMBSEG_EXPERIMENTS = PLAN.thrombseg_experiments
NNUNET_EXPERIMENTS = PLAN.nnunet_experiments
NNUNET = _plan(lambda: PLAN.nnunet)  # experiment -> dataset id and folder, configuration, trainer, budget
NNUNET_EXPERIMENT_OF = {s["dataset"]: e for e, s in NNUNET.items()}  # nnU-Net dataset folder -> experiment


def one_of(names):
    """A wildcard constraint matching exactly these names (none: matching nothing)."""
    return "|".join(re.escape(n) for n in names) or "(?!)"


def thrombus_model(experiment):
    """The experiment's thrombus model file (thrombseg's model.pt or nnU-Net's final checkpoint)."""
    return PLAN.thrombus_model(experiment)


def nnunet_settings_of(w):
    """The nnU-Net settings of a rule's experiment (wildcard `experiment`, or `dataset`: its folder)."""
    return NNUNET[w.experiment if "experiment" in w.keys() else NNUNET_EXPERIMENT_OF[w.dataset]]


def nnunet_pid(w):
    """The protocol of a rule's nnU-Net experiment (wildcard `experiment` or `dataset`)."""
    return experiment_pid(w.experiment if "experiment" in w.keys() else NNUNET_EXPERIMENT_OF[w.dataset])


# ------------------------------------------------------------------ single-center reruns
# `--config centers=[X]` restricts the run to X's patients. Cohort-level outputs (metrics, figures,
# tables, provenance) then go to results/selections/centers-X/ so the full run's are never
# overwritten, and when every model and the harmonization landmarks already exist they are
# *reused as given files*: the training and landmark rules are not defined at all, so nothing the
# selection re-runs (`--forcerun ingest`) can make them out of date and retrain.
SELECTION = PLAN.selection
try:  # the decisions every rule file reads
    REUSE_MODELS = PLAN.reuse_models
    # Patients whose preprocessing a run asks for (all, or the selection's test patients).
    PREPROCESS_SUBJECTS = PLAN.preprocess_subjects
    REPORT_EXPERIMENTS = PLAN.report_experiments
except ValueError as exc:
    raise WorkflowError(str(exc)) from None
if SELECTION and not REUSE_MODELS:
    print(f"thrombseg: centers={PLAN.centers_filter} but some models/landmarks are missing "
          f"({', '.join(PLAN.missing_frozen())}): they are trained on the whole "
          "cohort first", file=sys.stderr)


def frozen(path):
    """A model or landmarks file as an input: ignore its age when it is reused as given."""
    return ancient(path) if REUSE_MODELS else path


PRE_THREADS = config["preprocess"].get("threads", 2)
# Where `download_hdbet_weights` puts HD-BET's weights: the configured folder or HD-BET's default.
HDBET_WEIGHTS_DIR = str(
    (config["preprocess"].get("skullstrip") or {}).get("hdbet_weights") or Path(HDBET_DEFAULT_WEIGHTS)
)


# ------------------------------------------------------------------ report
EXPERIMENT_LABELS = experiment_labels(config["training"])
REPORT_N_BOOT = config["evaluation"].get("n_boot", 2000)
FIGURES = LAYOUT.figures
TABLES = LAYOUT.tables

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


def _all_fig(name, caption):
    return report(
        f"{FIGURES}/{name}.png",
        category="5. Figures",
        subcategory="All experiments",
        caption=f"../report/{caption}.rst",
        labels={"figure": name.replace("_", " "), "experiment": "all"},
    )
