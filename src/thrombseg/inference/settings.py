"""The options of prediction and post-processing (torch-free: the CLI and tuning read them without a model)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SELECTIONS", "InferenceConfig", "InferenceError", "read_tuned"]

PROBABILITIES = ("threshold", "regrow_threshold", "infarct_threshold")
SIZES = ("min_size_voxels", "min_volume_mm3", "keep_within_mm", "proximity_mm", "same_side_mm")
SELECTIONS = ("rule", "score")  # how post-processing picks the thrombus among the candidates


class InferenceError(ValueError):
    """A patient or model that cannot be predicted; the message says why."""


@dataclass
class InferenceConfig:
    """Options of prediction and lesion-guided post-processing."""

    threshold: float = 0.5
    overlap: float = 0.5
    tta_flip: bool = False
    batch_size: int = 4
    min_size_voxels: int = 20
    min_volume_mm3: float | None = None
    keep_within_mm: float | None = None
    proximity_mm: float | None = None  # None: keep the component nearest the infarct (see postprocess)
    same_side_mm: float | None = None  # None: components on either side of the midline are candidates
    regrow_threshold: float = 0.3
    postprocess: bool = True
    infarct_threshold: float = 0.5
    subsets: str | list = "all"  # all | leave-one-out | full | list of lists (see sequence_subsets)
    device: str = "auto"
    selection: str = "rule"  # rule: the component rules above; score: the scorer, which may answer "no thrombus"
    presence_threshold: float = 0.5  # score: keep the best candidate only if its score reaches this (tuned)
    scorer: dict | None = None  # score: the candidate scorer fitted on the validation patients (postprocess.json)

    def __post_init__(self):
        # Checked here, before any preprocessing or model runs, instead of deep inside post-processing.
        bad = self._problems()
        if bad:
            raise InferenceError("inference settings: " + "; ".join(bad))

    def _problems(self) -> list[str]:
        """One phrase per setting out of its range."""
        bad = []
        for name in PROBABILITIES:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1:
                bad.append(f"{name} must be a number in (0, 1], got {v!r}")
        if not bad and self.postprocess and self.regrow_threshold > self.threshold:
            bad.append(f"regrow_threshold ({self.regrow_threshold}) must not exceed threshold ({self.threshold})")
        if not isinstance(self.overlap, (int, float)) or not 0 <= self.overlap < 1:
            bad.append(f"overlap must be in [0, 1), got {self.overlap!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            bad.append(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        for name in SIZES:
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):
                bad.append(f"{name} must be >= 0, got {v!r}")
        return bad + self._selection_problems()

    def _selection_problems(self) -> list[str]:
        """Phrases for the candidate selection settings (the scorer's content is checked where it is used)."""
        bad = []
        if self.selection not in SELECTIONS:
            bad.append(f"selection must be one of {', '.join(SELECTIONS)}, got {self.selection!r}")
        v = self.presence_threshold
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
            bad.append(f"presence_threshold must be a number in [0, 1], got {v!r}")
        if self.scorer is not None and not isinstance(self.scorer, dict):
            bad.append(f"scorer must be a mapping (the tuning's candidate scorer), got {type(self.scorer).__name__}")
        elif self.selection == "score" and self.scorer is None:
            bad.append("selection 'score' needs the candidate scorer fitted on the validation patients "
                       "(inference.tune.selection: score writes it to postprocess.json)")
        return bad

    @classmethod
    def from_dict(cls, d: dict | None) -> InferenceConfig:
        unknown = sorted(set(d or {}) - set(cls.__dataclass_fields__))
        if unknown:
            raise InferenceError(f"inference settings: unknown key(s) {unknown} "
                                 f"(known: {', '.join(cls.__dataclass_fields__)})")
        return cls(**(d or {}))


def read_tuned(path: str | Path) -> dict:
    """The ``chosen`` settings of a post-processing tuning file (``postprocess.json``)."""
    p = Path(path)
    try:
        chosen = json.loads(p.read_text())["chosen"]
        if not isinstance(chosen, dict):
            raise TypeError("'chosen' is not a mapping")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InferenceError(f"{p}: not a post-processing tuning file ({type(exc).__name__}: {exc})") from None
    return chosen
