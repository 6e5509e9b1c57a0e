"""The preprocessing stage's options: every default in one place, and the checks of a given config.

``DEFAULT_CONFIG`` is the authoritative source of the ``preprocess:`` section's defaults; the
workflow schema only types that section and ``config/config.yaml`` states the few values it changes
(tests/test_config.py holds the three together).
"""

from __future__ import annotations

import copy

from ..core.sequences import SEQUENCES, sources
from ._io import PreprocessingError
from .skullstrip import BACKENDS, DEFAULT_BACKEND

#: Reference sequence, first present wins: the susceptibility image the thrombus is drawn on first.
SEQUENCE_PRIORITY: tuple[str, ...] = ("swi", "t2star", "dwi", "flair", "adc", "t1", "phase")
#: The magnitude images a phase image comes with (same acquisition), in order of preference.
MAGNITUDE_OF_PHASE: tuple[str, ...] = sources("swi")
#: Sequences N4 must not touch: phase is signed and not a multiplicative-bias magnitude, ADC is a
#: quantitative map whose values carry meaning (infarct < 0.6e-3 mm^2/s).
N4_SKIP_DEFAULT: tuple[str, ...] = ("phase", "adc")
#: Sequences that are not Nyul-standardised by default (signed phase: z-score only).
NYUL_SKIP_DEFAULT: tuple[str, ...] = ("phase",)
#: Nyul percentile cutoffs (lowest, highest) of the intensities mapped onto the standard scale.
DEFAULT_CUTOFF: tuple[float, float] = (0.01, 0.99)

DEFAULT_CONFIG: dict = {
    "reference": None,                       # force a reference sequence; None = first of priority
    "reference_priority": list(SEQUENCE_PRIORITY),
    "threads": 2,
    "deterministic": True,                   # ITK/ANTs single-threaded: bit-identical reruns
    "skullstrip": {
        "backend": DEFAULT_BACKEND,          # deepbet | ants | hdbet
        "sequence": None,                    # sequence to strip; None = the reference
        "hdbet_weights": None,               # folder with HD-BET's model (see skullstrip.py)
        "hdbet_device": "cpu",
        "hdbet_tta": False,
        "ants_refine": True,
        "ants_template_resolution": 2,
        "tighten": True,                     # brain mask = backend mask minus its CSF/skull rim
        # The images also keep what lies within this margin of the intracranial mask and inside its
        # convex hull, where the intracranial ICA and the basilar artery run. 0 = the mask as it is.
        "vessel_margin_mm": 8.0,
    },
    "registration": {
        "transform": "rigid",                # rigid | affine
        "init": "auto",                      # auto | identity | com
        "reg_spacing_mm": 2.0,
        "brain_mask_dilation_mm": 10.0,      # fixed-image mask = dilated brain (null: no mask)
        "interpolation": "linear",           # for images; labels use the volume-preserving mover
        "seed": 42,
    },
    "grid": {"crop_margin_mm": 10.0, "spacing_mm": None},
    "n4": {"enabled": True, "skip": list(N4_SKIP_DEFAULT), "iterations": [20, 20, 10], "fit_spacing_mm": 4.0},
    "harmonize": {"nyul_skip": list(NYUL_SKIP_DEFAULT), "cutoff": list(DEFAULT_CUTOFF), "clip": 8.0},
    "qc": {"montage": True},
}


def _merge(base: dict, over: dict, path: str = "preprocess") -> dict:
    """``base`` updated by ``over``; a key ``base`` does not have is an error naming its path."""
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if k not in base:
            raise PreprocessingError(f"config: unknown option '{path}.{k}' (known: {', '.join(base)})")
        if isinstance(base[k], dict):
            if not isinstance(v, dict):
                raise PreprocessingError(f"config: '{path}.{k}' must be a mapping")
            out[k] = _merge(base[k], v, f"{path}.{k}")
        else:
            out[k] = copy.deepcopy(v)
    return out


def resolve_config(config: dict | None = None) -> dict:
    """Defaults merged with ``config`` (the workflow config or just its ``preprocess`` section)."""
    config = config or {}
    if "preprocess" in config and isinstance(config["preprocess"], dict):
        config = config["preprocess"]
    cfg = _merge(DEFAULT_CONFIG, config)
    _check_values(cfg)
    return cfg


def _check_values(cfg: dict) -> None:
    """PreprocessingError for a value whose misuse would pass silently (a string taken for true, ...)."""
    if cfg["skullstrip"]["backend"] not in BACKENDS:
        raise PreprocessingError(f"config: preprocess.skullstrip.backend must be one of {BACKENDS}, "
                                 f"got {cfg['skullstrip']['backend']!r}")
    if not isinstance(cfg["deterministic"], bool):
        raise PreprocessingError(f"config: preprocess.deterministic must be true or false, got {cfg['deterministic']!r}")
    if cfg["threads"] is not None and (isinstance(cfg["threads"], bool) or not isinstance(cfg["threads"], int)
                                       or cfg["threads"] < 1):
        raise PreprocessingError(f"config: preprocess.threads must be an integer >= 1, got {cfg['threads']!r}")
    margin = cfg["skullstrip"]["vessel_margin_mm"]
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or margin < 0:
        raise PreprocessingError(f"config: preprocess.skullstrip.vessel_margin_mm must be a number >= 0 (mm), "
                                 f"got {margin!r}")
    bad = [s for s in cfg["reference_priority"] if s not in SEQUENCES]
    if bad:
        raise PreprocessingError(f"config: preprocess.reference_priority has unknown sequences {bad}")
