"""The thrombus probability of one patient's sequence subset from a trained nnU-Net, on the harmonized grid.

The inputs are written as in training (``dataset.write_test_inputs``: absent sequences filled) and
read back by nnU-Net's own reader, so the predictor sees exactly what ``nnUNetv2_predict`` would. The
pinned reader (``dataset.READER``, SimpleITK) orders a volume's axes (z, y, x); :func:`to_grid`
undoes it, so the returned array is indexed like the Case arrays (x, y, z) and thrombseg's own
post-processing and metrics run on it unchanged.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from ...core.case import Case
from ...core.layout import NNUNET_CHECKPOINT as CHECKPOINT
from ...core.layout import NNUNET_FOLD
from .dataset import TARGET, write_test_inputs
from .lookup import findable_trainers

DEFAULT_FOLDS = (NNUNET_FOLD,)  # the baseline trains one model on all training patients (fold "all")


def to_grid(volume: np.ndarray) -> np.ndarray:
    """A volume in nnU-Net's reader order (z, y, x) as a harmonized-grid array (x, y, z)."""
    return np.ascontiguousarray(np.asarray(volume).transpose(2, 1, 0))


def load_predictor(model_folder: str | Path, folds: Sequence = DEFAULT_FOLDS, checkpoint: str = CHECKPOINT,
                   device: torch.device | None = None, use_mirroring: bool = True):
    """nnU-Net's ``nnUNetPredictor`` for a trained model folder (``<trainer>__<plans>__<configuration>``).

    On CPU unless ``device`` says otherwise; nothing is kept on the device between steps there
    (``perform_everything_on_device`` only helps on a GPU).
    """
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor  # nnunetv2 pulls in a lot: only when used

    device = device or torch.device("cpu")
    predictor = nnUNetPredictor(use_mirroring=use_mirroring, perform_everything_on_device=device.type == "cuda",
                                device=device, verbose=False, verbose_preprocessing=False, allow_tqdm=False)
    with findable_trainers():
        predictor.initialize_from_trained_model_folder(str(model_folder), use_folds=tuple(folds),
                                                       checkpoint_name=checkpoint)
    return predictor


def model_channels(predictor) -> list[str]:
    """The channel order the model was trained with (its dataset.json)."""
    names = predictor.dataset_json["channel_names"]
    return [names[k] for k in sorted(names, key=int)]


def predict_files(predictor, image_files: Sequence[str | Path], target: str = TARGET) -> np.ndarray:
    """The ``target`` probability (float32, harmonized-grid order) of one case's channel files."""
    reader = predictor.plans_manager.image_reader_writer_class()
    data, properties = reader.read_images([str(f) for f in image_files])
    _, probabilities = predictor.predict_single_npy_array(data, properties, None, None, True)
    index = predictor.label_manager.all_labels.index(predictor.dataset_json["labels"][target])
    return to_grid(probabilities[index]).astype(np.float32)


def predict_case(predictor, case: Case, keep: Iterable[str], work_dir: str | Path | None = None,
                 target: str = TARGET) -> np.ndarray:
    """The ``target`` probability of ``case`` predicted from the sequences in ``keep`` only, shaped like ``case.shape``.

    The inputs go to ``work_dir`` (an ``imagesTs``-style folder; a temporary one when None).
    """
    keep = tuple(keep)
    given = nullcontext(work_dir) if work_dir is not None else tempfile.TemporaryDirectory(prefix="nnunet-input-")
    with given as folder:
        files = write_test_inputs(case, model_channels(predictor), folder, keep)
        prob = predict_files(predictor, files, target)
    if prob.shape != case.shape:
        raise RuntimeError(f"{case.subject}: nnU-Net returned {prob.shape}, the harmonized grid is {case.shape}")
    return prob
