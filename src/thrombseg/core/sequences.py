"""The sequence and label contract shared by every stage."""

from __future__ import annotations

SEQUENCES: tuple[str, ...] = ("swi", "phase", "t2star", "dwi", "adc", "flair", "t1")
LABELS: tuple[str, ...] = ("thrombus_mask", "infarct_mask")
SPLITS: tuple[str, ...] = ("train", "val", "test")

# Optional sheet column: is there a thrombus to find? "false" marks a thrombus-negative patient (its
# thrombus mask, when given, is empty); an empty cell says nothing, and counts as present (older sheets).
PRESENCE_COLUMN = "thrombus_present"
PRESENCE_VALUES: tuple[str, ...] = ("", "true", "false")


def presence_value(present: bool) -> str:
    """The sheet cell of a thrombus presence: ``true`` or ``false``."""
    return "true" if present else "false"


def thrombus_absent(value) -> bool:
    """Whether a presence cell (sheet string or bool) says there is no thrombus; empty/unknown: False."""
    return str(value).strip().lower() == "false"

# The image each label is drawn on, in order of preference: annotators draw the thrombus on the
# susceptibility image and the infarct on DWI.
LABEL_GRID: dict[str, tuple[str, ...]] = {
    "thrombus_mask": ("swi", "t2star"),
    "infarct_mask": ("dwi", "adc", "flair"),
}

# A model channel may be filled by another sequence of the same family when the first is absent:
# T2*-GRE stands in for SWI as the susceptibility channel (both show the blooming thrombus).
FALLBACK: dict[str, tuple[str, ...]] = {"swi": ("t2star",)}

# What a model segments -> the harmonized label file stem.
TARGETS: tuple[str, ...] = ("thrombus", "infarct")
TARGET_FILES: dict[str, str] = {"thrombus": "label-thrombus", "infarct": "label-infarct"}
DEFAULT_MODALITIES: dict[str, tuple[str, ...]] = {
    "thrombus": ("swi", "phase", "dwi", "adc", "flair"),
    "infarct": ("dwi", "adc", "flair"),
}

# Earlier versions called the infarct "lesion"; what they wrote is still read under the new names:
# target / label name (model files, ingest folders), sheet column, harmonized label file stem.
OLD_TARGETS: dict[str, str] = {"lesion": "infarct"}
OLD_LABELS: dict[str, str] = {f"{old}_mask": f"{new}_mask" for old, new in OLD_TARGETS.items()}
OLD_TARGET_FILES: dict[str, str] = {f"label-{old}": new for old, new in OLD_TARGETS.items()}


def current_target(name: str) -> str:
    """A target name with an earlier version's name (``lesion``) replaced by today's (``infarct``)."""
    return OLD_TARGETS.get(name, name)


def old_names(target: str) -> tuple[str, ...]:
    """Earlier versions' names of a target (``infarct`` -> ``("lesion",)``), to find the files they wrote."""
    return tuple(old for old, new in OLD_TARGETS.items() if new == target)


def sources(channel: str) -> tuple[str, ...]:
    """The sequences that may fill a model channel, in order of preference."""
    return (channel, *FALLBACK.get(channel, ()))
