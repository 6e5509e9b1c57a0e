"""nnU-Net's trainer lookup by name, with thrombseg's trainers found first.

nnU-Net (``recursive_find_trainer_class_by_name``) finds ``-tr <name>`` by importing every module
under ``nnunetv2.training.nnUNetTrainer`` until one defines the name, then the folders of
``nnUNet_extTrainer``. Importing them all fails where an optional dependency of some nnU-Net trainer
is missing (its Primus trainers import ``timm``, which needs ``torchvision``: not in thrombseg's CPU
environment), so a trainer outside nnU-Net is never reached. Training and prediction therefore run
nnU-Net's own functions with the lookup resolving :data:`trainers.TRAINERS` by name and handing
every other name to nnU-Net's lookup unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

# The nnU-Net modules that resolve a trainer name (each imported the function under its own name).
LOOKUP_MODULES = ("nnunetv2.run.run_training", "nnunetv2.inference.predict_from_raw_data")
LOOKUP_NAME = "recursive_find_trainer_class_by_name"


def find_trainer(name: str):
    """The trainer class called ``name``: thrombseg's own, else nnU-Net's lookup's."""
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    from .trainers import TRAINERS

    return TRAINERS[name] if name in TRAINERS else recursive_find_trainer_class_by_name(name)


@contextmanager
def findable_trainers() -> Iterator[None]:
    """nnU-Net's training and prediction functions resolve trainer names with :func:`find_trainer` in the block."""
    import importlib

    modules = [importlib.import_module(m) for m in LOOKUP_MODULES]
    originals = [getattr(m, LOOKUP_NAME) for m in modules]
    for m in modules:
        setattr(m, LOOKUP_NAME, find_trainer)
    try:
        yield
    finally:
        for m, original in zip(modules, originals):
            setattr(m, LOOKUP_NAME, original)
