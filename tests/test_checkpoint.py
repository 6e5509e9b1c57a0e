"""Checkpoints are data, not code: saved plain, loaded with weights_only=True, old files still load."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from thrombseg.models.checkpoint import CheckpointError, build_network, load_checkpoint, load_model, save_checkpoint
from thrombseg.training.config import TrainConfig

TINY = {"model": "unet25d", "modalities": ["swi", "dwi"], "model_kwargs": {"widths": [4, 8]}}


class _RunsCode:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):  # unpickling calls open(path, "w")
        return (open, (self.path, "w"))


def _blob(seed=0) -> dict:
    torch.manual_seed(seed)
    cfg = TrainConfig.from_dict(TINY)
    return {"model": build_network(cfg).state_dict(), "config": cfg.to_dict()}


def test_code_in_a_checkpoint_never_runs(tmp_path):
    marker = tmp_path / "code_ran"
    evil = tmp_path / "evil.pt"
    torch.save({"model": _RunsCode(str(marker)), "config": {}}, evil)
    for load in (load_checkpoint, load_model):
        with pytest.raises(CheckpointError, match="never runs code from a model file"):
            load(evil)
    assert not marker.exists()


def test_new_files_are_plain_data(tmp_path):
    """What thrombseg writes loads with torch's strictest loader, no numpy globals allowed."""
    st = np.random.get_state()
    blob = _blob() | {"metrics": {"val_dice": np.float64(0.5), "epoch": np.int64(3)},
                      "rng": {"numpy": st, "python": random.getstate()}}
    save_checkpoint(blob, tmp_path / "m.pt")
    back = torch.load(tmp_path / "m.pt", weights_only=True)
    assert back["metrics"] == {"val_dice": 0.5, "epoch": 3}
    np.random.set_state(tuple(back["rng"]["numpy"]))
    a = np.random.rand()
    np.random.set_state(st)
    assert a == np.random.rand()
    model, cfg = load_model(tmp_path / "m.pt")
    assert cfg.modalities == ["swi", "dwi"]


def test_checkpoints_of_earlier_versions_still_load(tmp_path):
    """Earlier versions pickled numpy scalars (metrics) and arrays (RNG state) with torch.save."""
    old = _blob() | {"metrics": {"val_dice": np.float64(0.25)}, "rng": {"numpy": np.random.get_state()},
                     "thrombseg_format": 1}
    torch.save(old, tmp_path / "old.pt")
    back = load_checkpoint(tmp_path / "old.pt")
    assert float(back["metrics"]["val_dice"]) == 0.25
    assert isinstance(back["rng"]["numpy"][1], np.ndarray)
    load_model(tmp_path / "old.pt")


@pytest.mark.parametrize("content", [b"", b"not a zip at all", None])
def test_unreadable_files_are_one_line(tmp_path, content):
    p = tmp_path / "bad.pt"
    if content is None:
        torch.save({"weights": torch.zeros(2)}, p)  # loadable, but not a thrombseg model
    else:
        p.write_bytes(content)
    with pytest.raises(CheckpointError) as exc:
        load_model(p)
    assert str(p) in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_every_model_load_goes_through_the_safe_loader():
    """No torch.load outside models/checkpoint.py, and nowhere weights_only=False (resume, predict, tuning)."""
    from conftest import REPO

    hits = []
    for folder in ("src", "workflow", "benchmarks"):
        for f in (REPO / folder).rglob("*.py"):
            text = f.read_text()
            if "weights_only=False" in text or ("torch.load(" in text and f.name != "checkpoint.py"):
                hits.append(str(f.relative_to(REPO)))
    assert hits == []
