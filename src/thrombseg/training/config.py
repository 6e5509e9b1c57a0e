"""What a training run depends on: the run, modality-dropout, augmentation and hard-negative settings.

Every field is a key of the workflow config's ``training:`` section; a checkpoint stores the whole
:class:`TrainConfig`, and a run resumes only from a checkpoint made with the same settings
(:func:`changed_settings`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from ..core.sequences import DEFAULT_MODALITIES, current_target
from .modality_dropout import GROUPINGS, PRESETS, SCHEDULES, check_schedule

# What does not change the trained weights: a run may resume on another device or loader.
RESUME_IGNORES = ("device", "num_workers")
# Settings added since runs were saved whose defaults train exactly as before: absent = default.
ADDED_AS_BEFORE = ("hard_negatives",)
SELECTIONS = ("full_strength", "best", "last")
VAL_SUBSETS = ("full", "leave-one-out")


@dataclass
class AugmentConfig:
    """Augmentation and curriculum site-simulation strengths.

    Applied by the dataset to every training stack, before and independently of modality dropout:
    an ablation's dropout arms (gmd / fixed / none) share it unchanged.
    """

    flip: bool = True
    rotate_deg: float = 10.0
    noise_std: float = 0.05
    scale_std: float = 0.1
    gamma_std: float = 0.1
    # Site simulation, multiplied by the curriculum's site strength (0..1): (i + 1) / n from
    # site_boundaries[i] * epochs on (its own staircase, not the dropout's; trainer.curriculum).
    site_noise_std: float = 0.15
    site_bias: float = 0.3
    site_shift_std: float = 0.2
    site_boundaries: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75)


@dataclass
class DropoutConfig:
    """Gradual modality dropout (training.modality_dropout): attenuation schedule, probability p.

    ``schedule: none`` is the exact identity (nothing drawn, nothing rescaled); so is every epoch
    before ``boundaries[0]`` with the staircase / linear / cosine schedules. ``preset: reference``
    fills in the keys a config does not set with the authors' public implementation's values
    (modality_dropout.PRESETS; see :meth:`from_dict`).
    """

    schedule: str = "staircase"  # staircase | linear | cosine | fixed | none
    p: float = 0.5
    stages: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    boundaries: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75)
    sigma: float = 0.05
    eligible: list[str] | None = None  # model channels that may be dropped; None = all
    grouping: str = "per_sequence"  # per_sequence (each sequence drawn alone) | per_sample (together)
    preset: str | None = None  # None | reference

    def __post_init__(self) -> None:
        where = "training.dropout"
        if self.schedule not in SCHEDULES:
            raise ValueError(f"{where}.schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.grouping not in GROUPINGS:
            raise ValueError(f"{where}.grouping must be one of {', '.join(GROUPINGS)}, got {self.grouping!r}")
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"{where}.preset must be null or one of {', '.join(PRESETS)}, got {self.preset!r}")
        if not 0.0 <= float(self.p) <= 1.0 or float(self.sigma) < 0:
            raise ValueError(f"{where}: p must lie in [0, 1] and sigma be >= 0, got p={self.p}, sigma={self.sigma}")
        try:
            check_schedule(self.stages, self.boundaries)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None

    @classmethod
    def from_dict(cls, d: dict) -> DropoutConfig:
        """A config from a mapping; a ``preset`` supplies the keys the mapping does not set."""
        d = dict(d)
        preset = d.get("preset")
        if preset is not None and preset in PRESETS:
            d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in PRESETS[preset].items()} | d
        return cls(**d)


@dataclass
class HardNegativeConfig:
    """Hard-negative mining (training.hard_negatives): negative stacks on the model's own false positives.

    From each mining round on (every ``every`` epochs, or with ``every: null`` at the start of each
    dropout stage after the first), the current model predicts every training patient; the
    components of its probability map at or above ``threshold`` that miss the target are that
    patient's false positives, of which the ``max_per_case`` most confident are kept. A share
    ``share`` of the patient's negative stacks (those ``fg_oversample`` leaves negative) is then
    centred on one of them instead of drawn as ``negatives`` says. Off (``enabled: false``): the
    run is the one it was before this option existed.
    """

    enabled: bool = False
    share: float = 0.5
    every: int | None = None  # epochs between rounds; null: at each new dropout stage
    threshold: float = 0.5
    max_per_case: int = 8

    def __post_init__(self) -> None:
        where = "training.hard_negatives"
        if not 0.0 <= float(self.share) <= 1.0:
            raise ValueError(f"{where}.share must lie in [0, 1], got {self.share}")
        if self.every is not None and int(self.every) < 1:
            raise ValueError(f"{where}.every must be null or an integer >= 1, got {self.every}")
        if not 0.0 < float(self.threshold) <= 1.0:
            raise ValueError(f"{where}.threshold must lie in (0, 1], got {self.threshold}")
        if int(self.max_per_case) < 1:
            raise ValueError(f"{where}.max_per_case must be >= 1, got {self.max_per_case}")


@dataclass
class TrainConfig:
    """Everything a training run depends on (stored in each checkpoint)."""

    target: str = "thrombus"
    modalities: list[str] | None = None
    model: str = "upattllstm"
    model_kwargs: dict = field(default_factory=dict)
    epochs: int = 30
    batch_size: int = 4
    stack: int = 12
    crop: tuple[int, int] = (128, 128)
    repeats: int = 1  # positive/negative pairs drawn per training case per epoch
    fg_oversample: float = 0.0
    negatives: str = "brain"  # target-free stack: anywhere in the brain in plane, or "near" the target
    optimizer: str = "adam"  # adam (MIDL 2024) | sgd (nnU-Net: momentum 0.99, poly)
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_schedule: str = "poly"  # poly | none
    loss: str = "dice_ce"
    class_weights: list[float] | None = None
    dropout: DropoutConfig = field(default_factory=DropoutConfig)
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)
    seed: int = 0
    deterministic: bool = True
    num_workers: int = 0
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = True  # mixed precision, GPU only
    val_every: int = 1
    val_overlap: float = 0.5
    val_max_cases: int | None = None  # validate on the first N val cases (full volumes are costly on CPU)
    # mean over the sequence subsets an experiment is evaluated on (full | leave-one-out)
    val_subsets: str = "leave-one-out"
    # which epoch becomes model.pt: the best validated one once the curriculum is at full strength
    # (full_strength), the best of all (best), or the last (last); see trainer.selectable
    selection: str = "full_strength"
    threshold: float = 0.5
    hard_negatives: HardNegativeConfig = field(default_factory=HardNegativeConfig)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """A config from a mapping (unknown keys: ValueError); modalities default per target."""
        d = dict(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown training option(s): {unknown}")
        if isinstance(d.get("dropout"), dict):
            d["dropout"] = DropoutConfig.from_dict(d["dropout"])
        if isinstance(d.get("augment"), dict):
            d["augment"] = AugmentConfig(**d["augment"])
        if isinstance(d.get("hard_negatives"), dict):
            d["hard_negatives"] = HardNegativeConfig(**d["hard_negatives"])
        if d.get("crop") is not None and not isinstance(d["crop"], (list, tuple)):
            d["crop"] = (int(d["crop"]), int(d["crop"]))
        cfg = cls(**d)
        cfg.target = current_target(cfg.target)
        for key, allowed in (("selection", SELECTIONS), ("val_subsets", VAL_SUBSETS)):
            if getattr(cfg, key) not in allowed:
                raise ValueError(f"training.{key}: {getattr(cfg, key)!r} is not one of {', '.join(allowed)}")
        if cfg.modalities is None:
            cfg.modalities = list(DEFAULT_MODALITIES[cfg.target])
        cfg.crop = tuple(cfg.crop)
        return cfg

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def changed_settings(saved: dict | None, cfg: TrainConfig) -> list[str]:
    """Options that differ between a checkpoint's recorded settings and ``cfg`` (none recorded: []).

    A setting that a newer thrombseg added counts as changed too, so such a run starts over rather
    than mix two versions' training; except those of :data:`ADDED_AS_BEFORE` left at their
    defaults, which train exactly as the older version did.
    """
    if not saved:
        return []
    now = json.loads(json.dumps(cfg.to_dict()))  # tuples -> lists, as in the stored copy
    then = json.loads(json.dumps(saved, default=str))
    defaults = json.loads(json.dumps(TrainConfig().to_dict()))
    for key in ADDED_AS_BEFORE:
        then.setdefault(key, defaults[key])
    if "target" in then:  # a run of an earlier version that called the infarct "lesion" resumes
        then["target"] = current_target(then["target"])
    return sorted(k for k in now.keys() | then.keys()
                  if k not in RESUME_IGNORES and now.get(k) != then.get(k))
