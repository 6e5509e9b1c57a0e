"""Post-processing settings chosen on validation patients (thrombseg.inference.tune)."""

import json

import numpy as np
import pytest
import torch

from thrombseg.core.case import Case
from thrombseg.inference.predict import LoadedModel, inference_settings
from thrombseg.inference.settings import InferenceConfig, InferenceError
from thrombseg.inference.tune import candidates, tune_postprocessing, write_tuning
from thrombseg.models.checkpoint import ModelSpec


class Oracle(torch.nn.Module):
    """Returns its first input channel as the foreground probability (1 -> ~1, 0 -> ~0)."""

    def forward(self, x, available):
        fg = 20.0 * (x[:, 0] - 0.5)
        return torch.stack([torch.zeros_like(fg), fg], 1)


def _case(subject, thrombus_at, fp_at, infarct_at, size=2):
    shape = (40, 40, 12)
    swi, dwi, lab = np.zeros(shape, np.float32), np.zeros(shape, np.float32), np.zeros(shape, np.uint8)
    x, y, z = thrombus_at
    lab[x:x + size, y:y + size, z:z + size] = 1
    swi[lab > 0] = 1  # the model finds the true thrombus (8 voxels)...
    x, y, z = fp_at
    swi[x:x + 4, y:y + 4, z:z + 3] = 1  # ...and a larger false positive (48 voxels)
    x, y, z = infarct_at
    dwi[x:x + 6, y:y + 6, z:z + 4] = 1  # the infarct lies beside the true thrombus
    return Case(subject, "c", {"swi": swi, "dwi": dwi}, {"thrombus": lab}, None, (1.0, 1.0, 2.0))


@pytest.fixture
def models():
    thrombus = LoadedModel(Oracle(), ModelSpec(modalities=["swi", "dwi"], stack=4))  # reads swi only
    infarct = LoadedModel(Oracle(), ModelSpec(modalities=["dwi"], stack=4, target="infarct"))
    return thrombus, infarct


def test_a_minimum_size_that_drops_small_thrombi_is_not_kept(models):
    cases = [_case("v1", (10, 10, 5), (30, 30, 5), (13, 13, 4)), _case("v2", (25, 8, 3), (8, 30, 6), (28, 8, 2))]
    r = tune_postprocessing(cases, *models, InferenceConfig(min_size_voxels=20), {"min_size_voxels": [0, 5, 10, 20]})
    rows = {row["min_size_voxels"]: row for row in r["candidates"]}
    assert rows[20]["detection"] == 0.0 and rows[10]["detection"] == 0.0  # the 8-voxel thrombi are removed
    assert rows[5]["detection"] == 1.0 and rows[5]["dice"] > 0.9
    assert r["chosen"] == {"min_size_voxels": 0}  # 0 and 5 tie: the first in the grid wins
    assert r["subjects"] == ["v1", "v2"]


def test_ties_keep_the_configured_settings(models):
    cases = [_case("v1", (10, 10, 5), (30, 30, 5), (13, 13, 4))]
    r = tune_postprocessing(cases, *models, InferenceConfig(min_size_voxels=20), {"min_size_voxels": [30, 40]})
    assert r["chosen"] == {"min_size_voxels": 20} and len(r["candidates"]) == 3


def test_candidates_are_checked_and_the_choice_is_applied(tmp_path):
    assert candidates(InferenceConfig(), {"min_size_voxels": [20, 5]}) == [{"min_size_voxels": 20},
                                                                          {"min_size_voxels": 5}]
    with pytest.raises(InferenceError, match="cannot tune.*overlap"):
        candidates(InferenceConfig(), {"overlap": [0.5]})
    with pytest.raises(InferenceError, match="min_size_voxels must be >= 0"):
        candidates(InferenceConfig(), {"min_size_voxels": [-1]})
    path = write_tuning({"chosen": {"min_size_voxels": 5}}, tmp_path / "pp.json")
    cfg = inference_settings({"min_size_voxels": 20, "tune": {"min_size_voxels": [5, 20]}}, path, device="cpu")
    assert cfg.min_size_voxels == 5 and cfg.device == "cpu"
    (tmp_path / "bad.json").write_text(json.dumps({"candidates": []}))
    with pytest.raises(InferenceError, match="bad.json: not a post-processing tuning file"):
        inference_settings({}, tmp_path / "bad.json")
