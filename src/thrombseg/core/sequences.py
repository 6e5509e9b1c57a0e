"""The sequence and label contract shared by every stage."""

from __future__ import annotations

SEQUENCES: tuple[str, ...] = ("swi", "phase", "t2star", "dwi", "adc", "flair", "t1")
LABELS: tuple[str, ...] = ("thrombus_mask", "lesion_mask")
SPLITS: tuple[str, ...] = ("train", "val", "test")

# The image each label is drawn on, in order of preference: annotators draw the thrombus on the
# susceptibility image and the infarct on DWI.
LABEL_GRID: dict[str, tuple[str, ...]] = {
    "thrombus_mask": ("swi", "t2star"),
    "lesion_mask": ("dwi", "adc", "flair"),
}

# A model channel may be filled by another sequence of the same family when the first is absent:
# T2*-GRE stands in for SWI as the susceptibility channel (both show the blooming thrombus).
FALLBACK: dict[str, tuple[str, ...]] = {"swi": ("t2star",)}

# What a model segments -> the harmonized label file stem; "lesion" is the infarct.
TARGETS: tuple[str, ...] = ("thrombus", "lesion")
TARGET_FILES: dict[str, str] = {"thrombus": "label-thrombus", "lesion": "label-lesion"}
DEFAULT_MODALITIES: dict[str, tuple[str, ...]] = {
    "thrombus": ("swi", "phase", "dwi", "adc", "flair"),
    "lesion": ("dwi", "adc", "flair"),
}


def sources(channel: str) -> tuple[str, ...]:
    """The sequences that may fill a model channel, in order of preference."""
    return (channel, *FALLBACK.get(channel, ()))
