"""Harmonized patients as an nnU-Net v2 raw dataset, and one test patient's inputs for a sequence subset.

nnU-Net needs every channel of every case. An absent sequence is written as zeros (:data:`FILL_VALUE`):
nnU-Net z-scores each channel of each case on its own (``ZScoreNormalization``; the channel names are
not ``CT``), and a constant channel normalises to exactly 0, also with ``use_mask_for_norm`` (the
mask is the union of the non-zero voxels of all channels, so a zero channel never changes it). So
the network sees an absent sequence as an all-zero channel, the same in training and at inference,
and the same as gradual modality dropout's full attenuation (``x * eps`` with small ``eps``). A
channel fed by a fallback sequence (T2*-GRE for SWI, ``core.sequences.FALLBACK``) is filled from it,
as for UpAttLLSTM (``Case.inputs``).

Images are the harmonized arrays UpAttLLSTM sees, on the harmonized grid (``Case.affine``, else
the diagonal of ``Case.spacing``); every file is written atomically and ``dataset.json`` last, so a
dataset folder with a ``dataset.json`` is complete.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ...core.case import Case, load_case
from ...core.io import write_array_nifti, write_json
from ...core.layout import Layout
from ...core.sequences import DEFAULT_MODALITIES

FILL_VALUE = 0.0  # an absent sequence (module docstring)
FILE_ENDING = ".nii.gz"
TARGET = "thrombus"
# nnU-Net's reader, pinned: predict.py undoes its (z, y, x) axis order, which SimpleITKIO defines.
READER = "SimpleITKIO"
IMAGES_TR, LABELS_TR, IMAGES_TS = "imagesTr", "labelsTr", "imagesTs"
MAX_DATASET_ID = 999  # nnU-Net's three-digit dataset ids


def dataset_name(dataset_id: int, name: str) -> str:
    """nnU-Net's folder name ``DatasetXXX_<name>``."""
    if not 1 <= int(dataset_id) <= MAX_DATASET_ID:
        raise ValueError(f"nnU-Net dataset ids have three digits (1..{MAX_DATASET_ID}), got {dataset_id}")
    return Layout.nnunet_dataset(dataset_id, name)


def channel_file(folder: str | Path, case_id: str, index: int) -> Path:
    """``<folder>/<case>_<XXXX>.nii.gz``: nnU-Net's name of one channel's image."""
    return Path(folder) / f"{case_id}_{index:04d}{FILE_ENDING}"


def grid_affine(case: Case) -> np.ndarray:
    """The harmonized grid's voxel -> mm affine (the diagonal of the spacing when none is recorded)."""
    return np.asarray(case.affine, float) if case.affine is not None else np.diag([*case.spacing, 1.0])


def channel_arrays(case: Case, channels: Sequence[str], keep: Iterable[str] | None = None
                   ) -> tuple[list[np.ndarray], np.ndarray]:
    """One float32 array per channel (absent ones :data:`FILL_VALUE`) and the availability vector.

    ``keep``: the sequences the patient is predicted with (an evaluated subset); None keeps all.
    """
    drop = () if keep is None else tuple(set(case.images) - set(keep))
    arrays, available = case.inputs(channels, drop=drop)
    out = [np.full(case.shape, FILL_VALUE, np.float32) if a is None else np.asarray(a, np.float32) for a in arrays]
    return out, available


def write_case_images(case: Case, channels: Sequence[str], folder: str | Path, case_id: str | None = None,
                      keep: Iterable[str] | None = None) -> list[Path]:
    """Write a case's channels as ``<case>_<XXXX>.nii.gz`` into ``folder`` (``keep`` as in :func:`channel_arrays`)."""
    case_id = case_id or case.subject
    arrays, _ = channel_arrays(case, channels, keep)
    affine = grid_affine(case)
    return [write_array_nifti(a, affine, channel_file(folder, case_id, i)) for i, a in enumerate(arrays)]


def write_test_inputs(case: Case, channels: Sequence[str], folder: str | Path, keep: Iterable[str],
                      case_id: str | None = None) -> list[Path]:
    """One test patient's inputs for the sequence subset ``keep`` in an ``imagesTs``-style folder.

    Sequences outside ``keep`` are filled as in training (:data:`FILL_VALUE`); at least one channel
    must stay available, as nnU-Net would otherwise segment an all-zero image.
    """
    _, available = channel_arrays(case, channels, keep)
    if not available.any():
        raise ValueError(f"{case.subject}: none of {sorted(keep)} feeds a channel of {list(channels)}")
    return write_case_images(case, channels, folder, case_id, keep)


def dataset_json(channels: Sequence[str], num_training: int, target: str = TARGET) -> dict:
    """nnU-Net's ``dataset.json``: channels in the given (fixed) order, background 0 and the target 1."""
    return {
        "channel_names": {str(i): c for i, c in enumerate(channels)},
        "labels": {"background": 0, target: 1},
        "numTraining": int(num_training),
        "file_ending": FILE_ENDING,
        "overwrite_image_reader_writer": READER,
        "description": f"thrombseg harmonized volumes; absent sequences written as {FILL_VALUE:g}",
    }


def export_dataset(harmonized_root: str | Path, patients: Sequence[tuple[str, str]], raw_root: str | Path,
                   dataset_id: int, name: str, channels: Sequence[str] | None = None,
                   target: str = TARGET) -> Path:
    """Write ``patients`` ((subject, center) pairs, harmonized under ``harmonized_root/<subject>``)
    as ``<raw_root>/DatasetXXX_<name>``; returns that folder.

    An existing folder of the same name is replaced: it is derived data, and a patient left over
    from an earlier export must not join the training set.
    """
    channels = tuple(channels or DEFAULT_MODALITIES[target])
    if not patients:
        raise ValueError("no patients to export")
    out = Path(raw_root) / dataset_name(dataset_id, name)
    if out.exists():
        shutil.rmtree(out)
    for subject, center in patients:
        case = load_case(Path(harmonized_root) / subject, subject, center)
        if target not in case.labels:
            raise FileNotFoundError(f"{subject}: no {target} label in {Path(harmonized_root) / subject}")
        write_case_images(case, channels, out / IMAGES_TR)
        label = (np.asarray(case.labels[target]) > 0).astype(np.uint8)
        write_array_nifti(label, grid_affine(case), out / LABELS_TR / f"{subject}{FILE_ENDING}", dtype=np.uint8)
    write_json(dataset_json(channels, len(patients), target), out / "dataset.json")
    return out
