"""Every path of a results folder, each in one function: the workflow's rules and ``thrombseg
predict --results`` read the same layout.

Arguments may be Snakemake wildcards (``"{subject}"``): the functions only format strings.
Cohort-level outputs (metrics, figures, tables, provenance) of a one-center rerun go to
``selections/centers-X/`` so that the full run's are never overwritten.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

HARMONIZATION_DIR = "harmonization"
MODELS_DIR = "models"
INFARCT_DIR = "infarct"  # models/infarct/<protocol>/: one infarct model per protocol
SUBJECTS_RECORD = "subjects.json"  # beside a model.pt: the patients of its weights (train) and selection (val)
# nnU-Net v2's own folders (nnUNet_raw / nnUNet_preprocessed / nnUNet_results) under <root>/nnunet, and
# the names nnU-Net gives inside them (thrombseg.baselines.nnunet reads these; nothing here imports it).
NNUNET_DIR = "nnunet"
NNUNET_RAW, NNUNET_PREPROCESSED, NNUNET_TRAINED = "raw", "preprocessed", "trained"
NNUNET_PLANS = "nnUNetPlans"  # nnU-Net's default plans identifier
NNUNET_FOLD = "all"  # one model on every exported (training) patient: the splits are thrombseg's
NNUNET_CHECKPOINT = "checkpoint_final.pth"


@dataclass(frozen=True)
class Layout:
    """Paths under ``root``; ``selection`` (e.g. ``centers-ctrA``) moves the cohort-level outputs."""

    root: str = "results"
    selection: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", str(self.root).rstrip("/") or "/")

    # ---------------------------------------------------------------- per-patient outputs
    @property
    def logs(self) -> str:
        return f"{self.root}/logs"

    @property
    def synthetic_sheet(self) -> str:
        return f"{self.root}/synthetic/subjects.tsv"

    def synthetic_montage(self, center: str) -> str:
        return f"{self.root}/synthetic/qc/montage_{center}.png"

    def sheet_validation(self) -> str:
        return f"{self.root}/ingest/sheet_validation.json"

    def ingested(self, subject: str) -> str:
        return f"{self.root}/ingest/{subject}"

    def preprocessed(self, subject: str = "") -> str:
        return f"{self.root}/preprocessed" + (f"/{subject}" if subject else "")

    def harmonized(self, pid: str = "", subject: str = "") -> str:
        """Arrays harmonized with protocol ``pid``'s landmarks (``harmonized/<pid>/<subject>``)."""
        return f"{self.root}/harmonized" + (f"/{pid}" if pid else "") + (f"/{subject}" if subject else "")

    def predictions(self, experiment: str, subject: str = "") -> str:
        return f"{self.root}/predictions/{experiment}" + (f"/{subject}" if subject else "")

    def splits(self, pid: str) -> str:
        return f"{self.root}/splits/{pid}.tsv"

    def qc_table(self, center: str) -> str:
        return f"{self.root}/qc/{center}/preprocessing_qc.tsv"

    def qc_montages(self, center: str) -> str:
        return f"{self.root}/qc/{center}/montages"

    def dataset_description(self, folder: str) -> str:
        """The BIDS-derivatives description of an image-derivative folder (``preprocessed``, ...)."""
        return f"{self.root}/{folder}/dataset_description.json"

    # ---------------------------------------------------------------- fitted artefacts
    def landmarks(self, pid: str) -> str:
        """Nyul landmarks fitted on protocol ``pid``'s training patients only."""
        return f"{self.root}/{HARMONIZATION_DIR}/{pid}/landmarks.json"

    def models(self) -> str:
        return f"{self.root}/{MODELS_DIR}"

    def thrombus_dir(self, experiment: str) -> str:
        return f"{self.root}/{MODELS_DIR}/{experiment}/thrombus"

    def thrombus_model(self, experiment: str) -> str:
        return f"{self.thrombus_dir(experiment)}/model.pt"

    def tuned_postprocess(self, experiment: str) -> str:
        """Post-processing settings chosen on the experiment's validation patients."""
        return f"{self.thrombus_dir(experiment)}/postprocess.json"

    def infarct_dir(self, pid: str) -> str:
        return f"{self.root}/{MODELS_DIR}/{INFARCT_DIR}/{pid}"

    def infarct_model(self, pid: str) -> str:
        return f"{self.infarct_dir(pid)}/model.pt"

    # ---------------------------------------------------------------- nnU-Net baseline
    @staticmethod
    def nnunet_dataset(dataset_id: int, name: str) -> str:
        """nnU-Net's dataset folder name ``DatasetXXX_<name>`` (three-digit id)."""
        return f"Dataset{int(dataset_id):03d}_{name}"

    def nnunet(self, kind: str = "") -> str:
        """``<root>/nnunet`` or one of nnU-Net's folders under it (``raw`` | ``preprocessed`` | ``trained``)."""
        return f"{self.root}/{NNUNET_DIR}" + (f"/{kind}" if kind else "")

    def nnunet_raw_json(self, dataset: str) -> str:
        """The ``dataset.json`` of an exported raw dataset (written last: the export is complete)."""
        return f"{self.nnunet(NNUNET_RAW)}/{dataset}/dataset.json"

    def nnunet_preprocessed(self, dataset: str) -> str:
        """nnU-Net's plans and preprocessed data of one dataset."""
        return f"{self.nnunet(NNUNET_PREPROCESSED)}/{dataset}"

    def nnunet_model_dir(self, dataset: str, trainer: str, configuration: str) -> str:
        """nnU-Net's trained model folder ``<trainer>__<plans>__<configuration>`` (what its predictor loads)."""
        return f"{self.nnunet(NNUNET_TRAINED)}/{dataset}/{trainer}__{NNUNET_PLANS}__{configuration}"

    def nnunet_checkpoint(self, dataset: str, trainer: str, configuration: str) -> str:
        """The final checkpoint of fold ``all``; a ``subjects.json`` beside it records its patients."""
        return f"{self.nnunet_model_dir(dataset, trainer, configuration)}/fold_{NNUNET_FOLD}/{NNUNET_CHECKPOINT}"

    # ---------------------------------------------------------------- cohort-level outputs
    @property
    def agg(self) -> str:
        """Where the cohort-level outputs of this run go."""
        return f"{self.root}/selections/{self.selection}" if self.selection else self.root

    @property
    def agg_logs(self) -> str:
        return f"{self.agg}/logs"

    def metrics(self, experiment: str) -> str:
        return f"{self.agg}/metrics/{experiment}"

    def audit_table(self) -> str:
        """Which patients influenced each artefact of each experiment (the leakage audit)."""
        return f"{self.agg}/audit/leakage.tsv"

    @property
    def figures(self) -> str:
        return f"{self.agg}/figures"

    @property
    def tables(self) -> str:
        return f"{self.agg}/tables"

    @property
    def provenance(self) -> str:
        return f"{self.agg}/provenance"

    def provenance_config(self) -> str:
        """The config a full run was made with (what ``thrombseg predict --results`` reads)."""
        return f"{self.root}/provenance/config.yaml"

    # ---------------------------------------------------------------- discovery
    def trained_experiments(self) -> list[str]:
        """Experiments whose thrombus model exists."""
        return sorted(p.parent.parent.name for p in Path(self.models()).glob("*/thrombus/model.pt"))

    def trained_infarct_models(self) -> list[Path]:
        return sorted(Path(self.models(), INFARCT_DIR).glob("*/model.pt"))
