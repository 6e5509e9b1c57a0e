"""Workflow policy, torch-free: who is in the cohort, which protocols split it how, what each
experiment trains with, which steps a run needs, and where their files go.

The Snakefile builds one :class:`Plan` from its config and cohort when it parses; the rule files only
read it. Every decision here is a plain function or method, tested in milliseconds without a DAG.
"""

from __future__ import annotations

import copy
import os
import zlib
from collections.abc import Callable
from functools import cached_property

import pandas as pd

from .core.layout import Layout
from .core.sequences import PRESENCE_COLUMN, current_target

# experiment keys that are not training options; ``enabled: false`` keeps an experiment out of the run
# (an overlay cannot delete a key of config/config.yaml, but it can switch the experiment off)
EXPERIMENT_ONLY = ("protocol", "protocol_center", "enabled")

# ------------------------------------------------------------------ nnU-Net v2 baseline experiments
# An experiment with ``model: nnunet`` trains nnU-Net v2 (thrombseg.baselines.nnunet) on its protocol's
# training patients instead of a thrombseg network. It takes nothing from ``training.defaults`` (nnU-Net
# plans its own network, patch and batch); its keys are below. Its thrombus probability then goes through
# thrombseg's post-processing and metrics like any experiment's.
NNUNET = "nnunet"
NNUNET_CONFIGURATIONS = ("2d", "3d_fullres")
NNUNET_DEFAULT_CONFIGURATION = "2d"  # 3d_fullres is selectable; 2d fits the CPU demo's minutes
NNUNET_BUDGET_TRAINER, NNUNET_GMD_TRAINER = "nnUNetTrainerBudget", "nnUNetTrainerBudgetGMD"
# budget keys (absent: nnU-Net's own 1000 epochs x 250 iterations, 50 validation iterations)
NNUNET_BUDGET = ("epochs", "iterations", "val_iterations", "seed")
NNUNET_KEYS = ("model", "protocol", "configuration", "dataset_id", "dropout", "enabled", *NNUNET_BUDGET)
# Default dataset ids: NNUNET_ID_BASE + crc32(name) mod NNUNET_ID_SPAN, the same whatever other
# experiments a config holds (an id derived from an experiment's position would shift when one is added,
# and nnU-Net refuses an id that two dataset folders share). ``dataset_id`` sets one explicitly.
NNUNET_ID_BASE, NNUNET_ID_SPAN = 500, 500
DROPOUT_DEFAULT_SCHEDULE = "staircase"  # training.config.DropoutConfig's (tests keep them equal)

# Post-processing settings chosen on validation patients when ``inference.tune`` is absent; in mm^3
# so that one grid suits any voxel size (docs/decisions.md: the 20 mm^3 floor).
DEFAULT_TUNE_GRID = {"min_volume_mm3": [20.0, 40.0, 80.0]}

# The paper's protocols; what each keeps for training, validation and test is the splitter's
# (thrombseg.training.splits.assign_splits, given to Plan by the Snakefile).
PROTOCOLS = ("monocentric", "multicentric", "leave-center-out")

SCHEDULE_NAMES = {
    "none": "no dropout",
    "fixed": "fixed dropout",
    "staircase": "gradual dropout, staircase",
    "linear": "gradual dropout, linear",
    "cosine": "gradual dropout, cosine",
}


# ---------------------------------------------------------------------------- experiment settings
def deep_merge(base: dict, over: dict) -> dict:
    """``base`` updated by ``over``, nested dicts merged key by key (neither is modified)."""
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def enabled_experiments(training: dict) -> list[str]:
    """The experiments the run trains and evaluates, sorted: all but those with ``enabled: false``."""
    return sorted(e for e, exp in (training.get("experiments") or {}).items() if (exp or {}).get("enabled", True))


def first_thrombseg_experiment(training: dict) -> str:
    """The first enabled experiment (config order) that trains a thrombseg network, not nnU-Net."""
    exps, enabled = training.get("experiments") or {}, set(enabled_experiments(training))
    names = [e for e in exps if e in enabled and not is_nnunet(exps[e])]
    if not names:
        raise ValueError("no enabled thrombseg experiment in training.experiments")
    return names[0]


def is_nnunet(exp: dict | None) -> bool:
    """Whether an experiment's settings train the nnU-Net baseline (``model: nnunet``)."""
    return (exp or {}).get("model") == NNUNET


def experiment_settings(training: dict, experiment: str, target: str = "thrombus") -> tuple[dict, dict]:
    """(training options, experiment-only keys) of one experiment and target (thrombus | infarct).

    An nnU-Net experiment has no thrombseg training options: ValueError for its thrombus model (see
    :func:`nnunet_settings`); its protocol's infarct model is thrombseg's, as for any experiment.
    """
    exps = training.get("experiments") or {}
    if experiment not in exps:
        raise ValueError(f"experiment {experiment!r} not in config training.experiments ({sorted(exps)})")
    if is_nnunet(exps[experiment]) and current_target(target) != "infarct":
        raise ValueError(f"experiment {experiment!r} is an nnU-Net baseline (model: nnunet): the workflow's "
                         "nnunet_train rule trains it, not thrombseg's trainer")
    exp = dict(exps[experiment] or {})
    extra = {k: exp.pop(k) for k in EXPERIMENT_ONLY if k in exp}
    cfg = deep_merge(training.get("defaults") or {}, exp)
    if current_target(target) == "infarct":  # the infarct model shares the machinery, not the thrombus architecture
        cfg = infarct_options(deep_merge(training.get("defaults") or {}, training.get("infarct") or {}))
    else:
        cfg["target"] = "thrombus"
    return cfg, extra


def infarct_options(cfg: dict) -> dict:
    """Training options ``cfg`` as the infarct model's: target infarct, and never hard-negative mining
    (its false positives are no thrombus decoys; ``hard_negatives`` is dropped, as if never set)."""
    cfg = {k: v for k, v in cfg.items() if k != "hard_negatives"}
    return cfg | {"target": "infarct"}


def nnunet_dropout_schedule(exp: dict) -> str:
    """The GMD schedule of an nnU-Net experiment: ``none`` unless it gives ``dropout``."""
    if "dropout" not in exp:
        return "none"
    return (exp.get("dropout") or {}).get("schedule", DROPOUT_DEFAULT_SCHEDULE)


def nnunet_dataset_id(name: str, exp: dict) -> int:
    """The experiment's nnU-Net dataset id: ``dataset_id``, else a stable one from its name."""
    if exp.get("dataset_id") is not None:
        return int(exp["dataset_id"])
    return NNUNET_ID_BASE + zlib.crc32(name.encode()) % NNUNET_ID_SPAN


def nnunet_settings(training: dict, experiment: str) -> dict:
    """What the workflow runs for an nnU-Net experiment.

    Returns:
        ``{"dataset_id", "configuration", "trainer", "budget": {epochs, iterations, val_iterations,
        seed: only those given}, "dropout": the dropout config (GMD trainer) or None}``. The GMD
        trainer runs when ``dropout`` is given with a schedule other than ``none``.
    """
    exps = training.get("experiments") or {}
    exp = exps.get(experiment)
    if not is_nnunet(exp):
        raise ValueError(f"experiment {experiment!r} is not an nnU-Net experiment (model: {NNUNET})")
    unknown = sorted(set(exp) - set(NNUNET_KEYS))
    if unknown:
        raise ValueError(f"experiment {experiment!r} (model: nnunet): unknown key(s) {unknown} "
                         f"(known: {', '.join(NNUNET_KEYS)})")
    configuration = exp.get("configuration", NNUNET_DEFAULT_CONFIGURATION)
    if configuration not in NNUNET_CONFIGURATIONS:
        raise ValueError(f"experiment {experiment!r}: configuration must be one of {NNUNET_CONFIGURATIONS}, "
                         f"got {configuration!r}")
    gmd = nnunet_dropout_schedule(exp) != "none"
    return {"dataset_id": nnunet_dataset_id(experiment, exp), "configuration": configuration,
            "trainer": NNUNET_GMD_TRAINER if gmd else NNUNET_BUDGET_TRAINER,
            "budget": {k: exp[k] for k in NNUNET_BUDGET if exp.get(k) is not None},
            "dropout": dict(exp.get("dropout") or {}) if gmd else None}


def experiment_labels(training: dict | None) -> dict[str, str]:
    """``experiment -> "name (dropout schedule)"`` from the config's ``training`` section (nnU-Net
    experiments: ``"name (nnU-Net 2d, dropout schedule)"``)."""
    training = training or {}
    default = ((training.get("defaults") or {}).get("dropout") or {}).get("schedule", "none")
    out = {}
    enabled = set(enabled_experiments(training))
    for name, exp in (training.get("experiments") or {}).items():
        exp = exp or {}
        if name not in enabled:
            continue
        if is_nnunet(exp):
            schedule = nnunet_dropout_schedule(exp)
            configuration = exp.get("configuration", NNUNET_DEFAULT_CONFIGURATION)
            out[name] = f"{name} (nnU-Net {configuration}, {SCHEDULE_NAMES.get(schedule, schedule)})"
            continue
        schedule = (exp.get("dropout") or {}).get("schedule", default)
        out[name] = f"{name} ({SCHEDULE_NAMES.get(schedule, schedule)})"
    return out


def train_resources(training: dict) -> dict:
    """Snakemake resources of a training job: memory, runtime and the standard ``gpu`` when asked."""
    resources = {"mem_mb": training["mem_mb"], "runtime": training["runtime_min"]}
    if training["gpus"] > 0:
        resources["gpu"] = training["gpus"]
    return resources


def tune_grid(section: dict | None) -> dict:
    """The ``tune:`` grid of an ``inference:`` section: absent -> DEFAULT_TUNE_GRID, null or {} -> off."""
    section = section or {}
    return dict(section.get("tune", DEFAULT_TUNE_GRID) or {})


# ---------------------------------------------------------------------------- protocols and splits
def protocol_id(protocol: str, center: str | None = None) -> str:
    """``multicentric``, ``monocentric-<center>``, ``leave-center-out-<center>``."""
    return protocol if not center else f"{protocol}-{center}"


def parse_protocol(pid: str) -> tuple[str, str | None]:
    """(protocol, center or None) of a protocol id; ValueError on an unknown protocol."""
    for protocol in PROTOCOLS:
        if pid == protocol or pid.startswith(f"{protocol}-"):
            return protocol, (pid[len(protocol) + 1:] or None)
    raise ValueError(f"unknown protocol {pid!r}; expected one of {PROTOCOLS}")


def cohort_table(center_of: dict[str, str], splits: list[str] | None = None,
                 present: list | None = None) -> pd.DataFrame:
    """``subject, center, split`` of the whole cohort (``split`` empty when the sheet gives none), and
    ``thrombus_present`` when ``present`` (sheet cells or bools) is given: the splits stratify by it."""
    table = pd.DataFrame({"subject": list(center_of), "center": list(center_of.values()),
                          "split": list(splits) if splits is not None else [""] * len(center_of)})
    if present is not None:
        table[PRESENCE_COLUMN] = list(present)
    return table


# ---------------------------------------------------------------------------- one run's plan
class Plan:
    """What one workflow run does, from its (validated) config and its whole cohort.

    ``cohort`` is :func:`cohort_table` of every patient, whatever the ``centers`` filter: splits use
    the whole cohort, so a one-center rerun reuses the models trained on everyone. ``assign``
    splits it for one protocol (``assign(cohort, protocol, seed=, center=)``, the signature of
    ``thrombseg.training.splits.assign_splits``); ``exists`` tells whether a file is there (the
    reuse decision of a one-center rerun).
    """

    def __init__(self, config: dict, cohort: pd.DataFrame, assign: Callable[..., pd.DataFrame],
                 exists: Callable[[str], bool] = os.path.exists):
        self.config = config
        self.cohort = cohort
        self._assign = assign
        self.cohort_center = dict(zip(cohort["subject"], cohort["center"]))
        self.centers_filter = [str(c) for c in config.get("centers") or []]
        self.training = config["training"]
        self.experiments = enabled_experiments(self.training)
        self.selection = "centers-" + "-".join(sorted(self.centers_filter)) if self.centers_filter else ""
        self.layout = Layout(config["results"], self.selection)
        self._exists = exists
        self._splits: dict[str, pd.DataFrame] = {}

    # ------------------------------------------------------------------ who
    @cached_property
    def subjects(self) -> list[str]:
        """The run's patients: the cohort restricted to the ``centers`` filter."""
        return sorted(s for s, c in self.cohort_center.items() if not self.centers_filter or c in self.centers_filter)

    @cached_property
    def center_of(self) -> dict[str, str]:
        return {s: self.cohort_center[s] for s in self.subjects}

    @cached_property
    def centers(self) -> list[str]:
        return sorted(set(self.center_of.values()))

    def unknown_centers(self) -> list[str]:
        """Centers of the ``centers`` filter that the cohort does not have."""
        known = set(self.cohort_center.values())
        return [c for c in self.centers_filter if c not in known]

    def center_subjects(self, center: str) -> list[str]:
        """The run's patients of one center."""
        return [s for s in self.subjects if self.center_of[s] == center]

    # ------------------------------------------------------------------ splits
    def splits_of(self, pid: str) -> pd.DataFrame:
        """``subject, center, split`` of a protocol id over the whole cohort (ValueError if unknown)."""
        if pid not in self._splits:
            protocol, center = parse_protocol(pid)
            seed = self.config.get("splits", {}).get("seed", 0)
            self._splits[pid] = self._assign(self.cohort, protocol, seed=seed, center=center)
        return self._splits[pid]

    def subjects_in(self, pid: str, *splits: str) -> list[str]:
        """Sorted patients of the protocol in any of ``splits``."""
        df = self.splits_of(pid)
        return sorted(df.loc[df["split"].isin(splits), "subject"])

    def experiment_pid(self, experiment: str) -> str:
        return self.training["experiments"][experiment]["protocol"]

    # ------------------------------------------------------------------ which model
    def is_nnunet(self, experiment: str) -> bool:
        """Whether the experiment trains the nnU-Net baseline rather than a thrombseg network."""
        return is_nnunet(self.training["experiments"][experiment])

    @cached_property
    def thrombseg_experiments(self) -> list[str]:
        """Experiments thrombseg's trainer trains (rule train_thrombus)."""
        return [e for e in self.experiments if not self.is_nnunet(e)]

    @cached_property
    def nnunet_experiments(self) -> list[str]:
        """Experiments that train nnU-Net (rules nnunet_export ... nnunet_train)."""
        return [e for e in self.experiments if self.is_nnunet(e)]

    @cached_property
    def nnunet(self) -> dict[str, dict]:
        """:func:`nnunet_settings` of each nnU-Net experiment plus its ``dataset`` folder name and
        ``checkpoint`` file; ValueError when two experiments share a dataset id."""
        out: dict[str, dict] = {}
        owner: dict[int, str] = {}
        for e in self.nnunet_experiments:
            s = nnunet_settings(self.training, e)
            if s["dataset_id"] in owner:
                raise ValueError(f"experiments {owner[s['dataset_id']]!r} and {e!r} get the same nnU-Net dataset id "
                                 f"{s['dataset_id']}: give one of them another training.experiments.<name>.dataset_id")
            owner[s["dataset_id"]] = e
            s["dataset"] = Layout.nnunet_dataset(s["dataset_id"], e)
            s["checkpoint"] = self.layout.nnunet_checkpoint(s["dataset"], s["trainer"], s["configuration"])
            out[e] = s
        return out

    def thrombus_model(self, experiment: str) -> str:
        """The experiment's thrombus model file: thrombseg's ``model.pt``, or nnU-Net's final checkpoint
        (each with its ``subjects.json`` beside it)."""
        if self.is_nnunet(experiment):
            return self.nnunet[experiment]["checkpoint"]
        return self.layout.thrombus_model(experiment)

    @cached_property
    def protocols(self) -> list[str]:
        """Protocol ids of the experiments; each has its own landmarks and harmonized arrays."""
        return sorted({self.experiment_pid(e) for e in self.experiments})

    def harmonized_subjects(self, pid: str) -> list[str]:
        """Patients harmonized with protocol ``pid``'s landmarks in this run: its training and
        validation patients and the run's test patients, or only the latter when models are reused."""
        tests = sorted({s for e in self.experiments if self.experiment_pid(e) == pid for s in self.test_subjects(e)})
        if self.reuse_models:
            return tests
        return sorted({*self.subjects_in(pid, "train", "val"), *tests})

    def test_subjects(self, experiment: str) -> list[str]:
        """Test patients of the experiment's protocol, restricted to the ``centers`` filter."""
        return [s for s in self.subjects_in(self.experiment_pid(experiment), "test") if s in self.center_of]

    def test_centers(self, experiment: str) -> list[str]:
        return sorted({self.center_of[s] for s in self.test_subjects(experiment)})

    def val_centers(self, experiment: str) -> dict[str, str]:
        """Validation patient -> center (whole cohort) of the experiment's protocol."""
        return {s: self.cohort_center[s] for s in self.subjects_in(self.experiment_pid(experiment), "val")}

    @cached_property
    def report_experiments(self) -> list[str]:
        """Experiments with test patients in this run: the ones evaluated and reported."""
        return [e for e in self.experiments if self.test_subjects(e)]

    def tunes(self, experiment: str) -> bool:
        """Whether the experiment's post-processing is chosen on validation patients (it needs some)."""
        return bool(tune_grid(self.config["inference"])) and bool(
            self.subjects_in(self.experiment_pid(experiment), "val"))

    def audit_artefacts(self, experiment: str) -> dict[str, tuple[str, str]]:
        """``{artefact: (kind, path)}`` of everything fitted that the experiment's predictions use."""
        pid, lay = self.experiment_pid(experiment), self.layout
        artefacts = {"harmonization landmarks": ("landmarks", lay.landmarks(pid)),
                     "thrombus model": ("model", self.thrombus_model(experiment)),
                     "infarct model": ("model", lay.infarct_model(pid))}
        if self.tunes(experiment):
            artefacts["post-processing tuning"] = ("tuning", lay.tuned_postprocess(experiment))
        return artefacts

    # ------------------------------------------------------------------ one-center reruns
    def frozen_files(self) -> list[str]:
        """Landmarks, models and tuned settings a one-center rerun reuses (in the order reported)."""
        lay = self.layout
        return [*(lay.landmarks(pid) for pid in self.protocols), *(self.thrombus_model(e) for e in self.experiments),
                *(lay.infarct_model(self.experiment_pid(e)) for e in self.experiments),
                *(lay.tuned_postprocess(e) for e in self.experiments if self.tunes(e))]

    def missing_frozen(self) -> list[str]:
        return [p for p in self.frozen_files() if not self._exists(p)]

    @cached_property
    def reuse_models(self) -> bool:
        """A one-center rerun with every model and the landmarks present reuses them as given files."""
        return bool(self.selection) and not self.missing_frozen()

    @cached_property
    def preprocess_subjects(self) -> list[str]:
        """Everyone, or when models are reused only the selection's test patients (re-preprocessing
        its training patients would make the models look out of date to the next full run)."""
        if self.reuse_models:
            return sorted({s for e in self.experiments for s in self.test_subjects(e)})
        return self.subjects
