"""The nnU-Net baseline's library: export, per-job environment, trainer variants, prediction on the grid.

The cohort is tiny and hand-made in the harmonized folder format (``<subject>_<seq>.npy``, the
thrombus label, a sidecar with spacing and affine); patients differ in their sequences (one without
phase, one with T2*-GRE instead of SWI) so the fill and the fallback are exercised.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

pytest.importorskip("nnunetv2")

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer  # noqa: E402

from thrombseg.baselines.nnunet import commands, dataset, environment, lookup, predict, trainers  # noqa: E402
from thrombseg.core.case import load_case  # noqa: E402
from thrombseg.core.io import write_array_nifti  # noqa: E402

SHAPE = (32, 28, 12)  # x, y, z: unequal so any axis mix-up changes the shape
SPACING = (1.0, 1.0, 2.0)
CHANNELS = ("swi", "phase", "dwi", "adc", "flair")
PROTOCOLS = {
    "p1": ("swi", "phase", "dwi", "adc", "flair"),
    "p2": ("swi", "dwi", "adc", "flair"),  # no phase: written as zeros
    "p3": ("t2star", "phase", "dwi", "adc", "flair"),  # T2*-GRE fills the swi channel
    "p4": ("swi", "phase", "dwi", "adc", "flair"),  # the test patient
}
DATASET_ID, NAME = 501, "thrombsegTest"


def _make_case(root: Path, subject: str, sequences, k: int) -> Path:
    rng = np.random.default_rng(k)
    d = root / subject
    d.mkdir(parents=True)
    truth = np.zeros(SHAPE, np.uint8)
    truth[10 + k:15 + k, 12:16, 4:7] = 1
    xx, yy = np.meshgrid(np.arange(SHAPE[0]), np.arange(SHAPE[1]), indexing="ij")
    brain = ((xx - 16) ** 2 / 14 ** 2 + (yy - 14) ** 2 / 12 ** 2) < 1
    for i, seq in enumerate(sequences):
        img = (rng.normal(1.0, 0.1, SHAPE) + 0.01 * i).astype(np.float32) * brain[:, :, None]
        if seq in ("swi", "t2star"):
            img[truth > 0] = 0.2  # the thrombus blooms dark
        np.save(d / f"{subject}_{seq}.npy", img)
    np.save(d / f"{subject}_label-thrombus.npy", truth)
    affine = np.diag([*SPACING, 1.0])
    affine[:3, 3] = (-15.0, -13.0, -11.0)  # an offset origin: the grid is not the identity
    (d / f"{subject}_arrays.json").write_text(json.dumps({"spacing_mm": list(SPACING), "affine_ras": affine.tolist()}))
    return d


@pytest.fixture
def cohort(tmp_path) -> Path:
    root = tmp_path / "results" / "harmonized" / "proto"
    for k, (subject, seqs) in enumerate(PROTOCOLS.items()):
        _make_case(root, subject, seqs, k)
    return root


def _train_patients():
    return [(s, "c") for s in ("p1", "p2", "p3")]


def _read(path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


# ------------------------------------------------------------------------------------------ export
def test_export_writes_nnunet_raw_layout_and_dataset_json(cohort, tmp_path):
    raw = tmp_path / "raw"
    out = dataset.export_dataset(cohort, _train_patients(), raw, DATASET_ID, NAME, CHANNELS)
    assert out == raw / f"Dataset{DATASET_ID}_{NAME}"
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["channel_names"] == {str(i): c for i, c in enumerate(CHANNELS)}
    assert meta["labels"] == {"background": 0, "thrombus": 1}
    assert meta["numTraining"] == 3 and meta["file_ending"] == ".nii.gz"
    images = sorted(p.name for p in (out / "imagesTr").iterdir())
    assert images == sorted(f"{s}_{i:04d}.nii.gz" for s, _ in _train_patients() for i in range(len(CHANNELS)))
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == ["p1.nii.gz", "p2.nii.gz", "p3.nii.gz"]
    case = load_case(cohort / "p1", "p1", "c")
    label = nib.load(str(out / "labelsTr" / "p1.nii.gz"))
    assert label.get_data_dtype() == np.uint8 and np.array_equal(np.asarray(label.dataobj), case.labels["thrombus"])
    assert np.allclose(label.affine, case.affine)
    assert np.array_equal(_read(out / "imagesTr" / "p1_0002.nii.gz"), case.images["dwi"])
    assert not list(out.rglob(".*.tmp*")), "a temporary file was left behind"
    # a re-export with fewer patients leaves none of the earlier ones behind
    dataset.export_dataset(cohort, _train_patients()[:2], raw, DATASET_ID, NAME, CHANNELS)
    assert not list((out / "labelsTr").glob("p3*")) and not list((out / "imagesTr").glob("p3_*"))


def test_missing_sequence_is_written_as_zeros_and_fallback_fills_its_channel(cohort, tmp_path):
    out = dataset.export_dataset(cohort, _train_patients(), tmp_path / "raw", DATASET_ID, NAME, CHANNELS)
    phase = CHANNELS.index("phase")
    assert not _read(out / "imagesTr" / f"p2_{phase:04d}.nii.gz").any()  # p2 has no phase
    p3 = load_case(cohort / "p3", "p3", "c")
    assert np.array_equal(_read(out / "imagesTr" / "p3_0000.nii.gz"), p3.images["t2star"])


def test_absent_channel_is_zero_after_nnunet_normalisation():
    """Why zeros: nnU-Net's z-scoring maps a constant channel to 0, with or without the nonzero mask."""
    from nnunetv2.preprocessing.normalization.default_normalization_schemes import ZScoreNormalization

    zeros = np.zeros((1, 8, 9, 10), np.float32)
    seg = -np.ones_like(zeros)
    seg[:, 2:6, 2:6, 2:6] = 0  # the nonzero region of the other channels
    for use_mask in (False, True):
        norm = ZScoreNormalization(use_mask_for_norm=use_mask, intensityproperties={})
        assert not norm.run(zeros.copy(), seg).any()


def test_test_inputs_fill_the_sequences_outside_the_subset(cohort, tmp_path):
    case = load_case(cohort / "p4", "p4", "c")
    keep = ("swi", "phase", "adc", "flair")  # dwi withheld
    files = dataset.write_test_inputs(case, CHANNELS, tmp_path / "imagesTs", keep)
    assert [f.name for f in files] == [f"p4_{i:04d}.nii.gz" for i in range(len(CHANNELS))]
    for channel, f in zip(CHANNELS, files):
        arr = _read(f)
        assert np.array_equal(arr, case.images[channel]) if channel in keep else not arr.any()
    with pytest.raises(ValueError, match="feeds a channel"):
        dataset.write_test_inputs(case, CHANNELS, tmp_path / "none", ("t1",))


def test_orientation_round_trips_through_nnunets_reader(cohort, tmp_path):
    """What nnU-Net reads (SimpleITK, z-y-x) maps back onto the harmonized voxels exactly."""
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    case = load_case(cohort / "p1", "p1", "c")
    files = dataset.write_case_images(case, CHANNELS, tmp_path / "imgs")
    data, props = SimpleITKIO().read_images([str(f) for f in files])
    assert data.shape == (len(CHANNELS), *SHAPE[::-1])
    assert tuple(props["spacing"]) == SPACING[::-1]
    for c, channel in enumerate(CHANNELS):
        assert np.array_equal(predict.to_grid(data[c]), case.images[channel])
    marker = np.zeros(SHAPE, np.float32)
    marker[3, 5, 7] = 1.0  # one voxel: an identity "prediction" must land where it was
    marker_file = write_array_nifti(marker, dataset.grid_affine(case), tmp_path / "m.nii.gz")
    reader_order = SimpleITKIO().read_images([str(marker_file)])[0][0]
    assert tuple(np.argwhere(predict.to_grid(reader_order))[0]) == (3, 5, 7)


def test_dataset_id_must_have_three_digits():
    assert dataset.dataset_name(7, "x") == "Dataset007_x"
    with pytest.raises(ValueError, match="three digits"):
        dataset.dataset_name(1000, "x")


# ------------------------------------------------------------------------------------- environment
def test_environment_is_set_for_the_call_only(tmp_path, monkeypatch):
    from nnunetv2 import paths

    monkeypatch.delenv("nnUNet_raw", raising=False)
    monkeypatch.setenv("nnUNet_results", "/users/own")
    before = dict(os.environ)
    env = environment.nnunet_env(tmp_path, {environment.EPOCHS_VAR: 2})
    assert os.environ == before, "building a subprocess environment changed this process's"
    assert env["nnUNet_raw"] == str(tmp_path / "nnunet" / "raw") and env[environment.EPOCHS_VAR] == "2"
    with pytest.raises(RuntimeError, match="boom"), environment.nnunet_environ(tmp_path):
        assert str(paths.nnUNet_raw) == str(tmp_path / "nnunet" / "raw")  # nnunetv2 reads it lazily
        assert str(paths.nnUNet_results) == str(tmp_path / "nnunet" / "trained")
        raise RuntimeError("boom")
    assert os.environ == before and not paths.nnUNet_raw.is_set()
    assert os.environ["nnUNet_results"] == "/users/own"


def test_nnunets_lookup_finds_thrombsegs_trainers_in_the_block_only():
    import nnunetv2.inference.predict_from_raw_data as predict_module
    import nnunetv2.run.run_training as train_module

    with lookup.findable_trainers():
        for module in (train_module, predict_module):
            for cls in (trainers.nnUNetTrainerBudget, trainers.nnUNetTrainerBudgetGMD):
                assert module.recursive_find_trainer_class_by_name(cls.__name__) is cls
            assert module.recursive_find_trainer_class_by_name("nnUNetTrainer") is nnUNetTrainer
    assert train_module.recursive_find_trainer_class_by_name is not lookup.find_trainer
    assert predict_module.recursive_find_trainer_class_by_name is not lookup.find_trainer


def test_commands():
    cmd = commands.plan_and_preprocess_command(DATASET_ID)
    assert Path(cmd[0]).name == "nnUNetv2_plan_and_preprocess" and cmd[cmd.index("-c") + 1] == "2d"
    cmd = commands.train_command(DATASET_ID, "3d_fullres", commands.GMD_TRAINER, resume=True)
    assert cmd[3:6] == [str(DATASET_ID), "3d_fullres", "all"] and cmd[-1] == "--c"
    assert cmd[cmd.index("-tr") + 1] == "nnUNetTrainerBudgetGMD"
    with pytest.raises(ValueError, match="configuration"):
        commands.train_command(DATASET_ID, "3d_lowres")


# ---------------------------------------------------------------------------------------- trainers
def _plans() -> dict:
    """The 2d configuration nnU-Net's planner chose for this cohort, cut to what a trainer reads when built."""
    arch = {"n_stages": 3, "features_per_stage": [32, 64, 128], "conv_op": "torch.nn.modules.conv.Conv2d",
            "kernel_sizes": [[3, 3]] * 3, "strides": [[1, 1], [2, 2], [2, 2]], "n_conv_per_stage": [2, 2, 2],
            "n_conv_per_stage_decoder": [2, 2], "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d", "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True}}
    config = {"data_identifier": "nnUNetPlans_2d", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
              "patch_size": [24, 28], "median_image_size_in_voxels": [23.0, 27.0], "spacing": [1.0, 1.0],
              "normalization_schemes": ["ZScoreNormalization"] * len(CHANNELS),
              "use_mask_for_norm": [True] * len(CHANNELS),
              "architecture": {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                               "arch_kwargs": arch,
                               "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
              "batch_dice": True}
    return {"dataset_name": f"Dataset{DATASET_ID}_{NAME}", "plans_name": "nnUNetPlans",
            "original_median_spacing_after_transp": [2.0, 1.0, 1.0], "image_reader_writer": dataset.READER,
            "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2], "configurations": {"2d": config},
            "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
            "foreground_intensity_properties_per_channel": {}}


@pytest.fixture
def planned(tmp_path):
    return tmp_path / "results", _plans(), dataset.dataset_json(CHANNELS, 3)


def _trainer(cls, planned, budget):
    res, plans, ds = planned
    with environment.nnunet_environ(res, budget):
        # nnU-Net's get_trainer_from_args adds continue_training to the plans; the trainer pops it
        return cls({**plans, "continue_training": False}, "2d", 0, ds, torch.device("cpu"))


def test_budget_trainer_reads_its_budget_from_the_job(planned):
    t = _trainer(trainers.nnUNetTrainerBudget, planned, {environment.EPOCHS_VAR: 3, environment.ITERS_VAR: 4,
                                                         environment.VAL_ITERS_VAR: 2})
    assert (t.num_epochs, t.num_iterations_per_epoch, t.num_val_iterations_per_epoch) == (3, 4, 2)
    assert t.save_every == trainers.SAVE_EVERY == 1  # a killed run loses at most one epoch
    t = _trainer(trainers.nnUNetTrainerBudget, planned, {})
    assert (t.num_epochs, t.num_iterations_per_epoch) == (1000, 250)  # nnU-Net's own defaults
    with pytest.raises(ValueError, match="positive"):
        _trainer(trainers.nnUNetTrainerBudget, planned, {environment.EPOCHS_VAR: 0})


def test_no_final_validation_on_fold_all(planned, monkeypatch):
    """Fold `all` would validate on its own training patients: skipped (minutes per patient on a CPU)."""
    ran = []
    monkeypatch.setattr(nnUNetTrainer, "perform_actual_validation", lambda self, npz=False: ran.append(self.fold))
    res, plans, ds = planned
    for fold in ("all", 0):
        with environment.nnunet_environ(res, {}):
            t = trainers.nnUNetTrainerBudget({**plans, "continue_training": False}, "2d", fold, ds, torch.device("cpu"))
        t.print_to_log_file = lambda *a, **k: None
        t.perform_actual_validation(False)
    assert ran == [0]


def test_gmd_hook_changes_only_dropped_channels(planned, monkeypatch):
    seen = []
    monkeypatch.setattr(nnUNetTrainer, "train_step", lambda self, batch: seen.append(batch["data"]) or {})
    fixed = json.dumps({"schedule": "fixed", "p": 0.5, "sigma": 0.0})  # a = 1, no noise: a drop is exactly 0
    t = _trainer(trainers.nnUNetTrainerBudgetGMD, planned, {environment.EPOCHS_VAR: 4, environment.DROPOUT_VAR: fixed})
    x = torch.rand(8, len(CHANNELS), 16, 16) + 0.5
    x[0, 1] = 0  # an absent sequence stays absent and is never the one kept
    t.current_epoch = 2
    t.train_step({"data": x.clone(), "target": None})
    y = seen[-1]
    same = (y == x).flatten(2).all(-1)
    zero = (y == 0).flatten(2).all(-1)
    assert (same | zero).all(), "a channel was changed other than by being dropped"
    assert zero[~same].all() and (~same).any() and (~zero).any(1).all()
    t.train_step({"data": x.clone(), "target": None})  # the same epoch draws on: another batch's drops
    t.current_epoch = 2
    t._gmd_epoch = None  # as after a resume: the epoch's generator is re-seeded from (seed, epoch)
    t.train_step({"data": x.clone(), "target": None})
    assert torch.equal(seen[-1], y)

    late = json.dumps({"boundaries": [0.5, 0.6, 0.7, 0.8]})  # staircase: nothing before half the epochs
    t = _trainer(trainers.nnUNetTrainerBudgetGMD, planned, {environment.EPOCHS_VAR: 4, environment.DROPOUT_VAR: late})
    t.current_epoch = 1
    t.train_step({"data": x, "target": None})
    assert seen[-1] is x


# ---------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_nnunet_end_to_end_on_a_tiny_cohort(cohort, tmp_path):
    """Export -> nnU-Net plan/preprocess (2d) -> train the budget trainer on CPU -> predict a test
    patient with DWI withheld, on the harmonized grid; the GMD trainer trains one epoch in nnU-Net's
    own loop and resumes (--c) for a second.

    Run time: about 2 min on 2 busy CPU cores (115 s measured; planning and preprocessing ~60 s, each
    training call mostly process start, as fold ``all`` skips nnU-Net's final validation; one epoch of
    2 iterations 0.2 s).
    """
    t0 = time.time()
    res = tmp_path / "results"
    log = res / "logs" / "nnunet.log"
    dataset.export_dataset(cohort, _train_patients(), environment.nnunet_dirs(res)["nnUNet_raw"], DATASET_ID, NAME,
                           CHANNELS)
    commands.plan_and_preprocess(DATASET_ID, res, log=log)
    budget = {environment.EPOCHS_VAR: 1, environment.ITERS_VAR: 2, environment.VAL_ITERS_VAR: 1}
    commands.train(DATASET_ID, res, budget, log=log)
    trained = environment.nnunet_dirs(res)["nnUNet_results"] / f"Dataset{DATASET_ID}_{NAME}"
    model = trained / "nnUNetTrainerBudget__nnUNetPlans__2d"
    assert (model / "fold_all" / "checkpoint_final.pth").exists()

    predictor = predict.load_predictor(model, use_mirroring=False)
    case = load_case(cohort / "p4", "p4", "c")
    prob = predict.predict_case(predictor, case, keep=("swi", "phase", "adc", "flair"),
                                work_dir=tmp_path / "imagesTs")
    assert prob.shape == case.shape and prob.dtype == np.float32
    assert np.isfinite(prob).all() and prob.min() >= 0.0 and prob.max() <= 1.0
    assert not _read(tmp_path / "imagesTs" / "p4_0002.nii.gz").any()  # dwi withheld: written as zeros

    commands.train(DATASET_ID, res, budget, trainer=commands.GMD_TRAINER, log=log)
    final = trained / "nnUNetTrainerBudgetGMD__nnUNetPlans__2d" / "fold_all" / "checkpoint_final.pth"
    assert torch.load(final, map_location="cpu", weights_only=False)["current_epoch"] == 1
    # a longer budget resumes from the finished run's checkpoint instead of starting over
    commands.train(DATASET_ID, res, {**budget, environment.EPOCHS_VAR: 2}, trainer=commands.GMD_TRAINER, log=log)
    assert torch.load(final, map_location="cpu", weights_only=False)["current_epoch"] == 2
    assert log.read_text().count("Epoch 0\n") == 2  # the resumed run started at epoch 1, not afresh
    print(f"nnU-Net end to end: {time.time() - t0:.0f} s")


# ------------------------------------------------------------------------------------- the workflow's steps
def test_the_plan_names_the_librarys_trainers_and_defaults():
    from thrombseg import plan
    from thrombseg.training.config import DropoutConfig

    assert {plan.NNUNET_BUDGET_TRAINER, plan.NNUNET_GMD_TRAINER} == set(trainers.TRAINERS)
    assert plan.DROPOUT_DEFAULT_SCHEDULE == DropoutConfig().schedule  # `dropout: {p: ..}` alone means GMD
    assert commands.DEFAULT_CONFIGURATION == plan.NNUNET_DEFAULT_CONFIGURATION == "2d"
    assert environment.nnunet_dirs("r")["nnUNet_results"] == Path("r/nnunet/trained")


def test_budget_variables_of_an_experiments_settings():
    from thrombseg.baselines.nnunet.workflow import budget_variables

    assert budget_variables({"budget": {}, "dropout": None}) == {}
    got = budget_variables({"budget": {"epochs": 3, "iterations": 4, "val_iterations": 1, "seed": 2},
                            "dropout": {"schedule": "linear"}})
    assert got == {environment.EPOCHS_VAR: "3", environment.ITERS_VAR: "4", environment.VAL_ITERS_VAR: "1",
                   environment.SEED_VAR: "2", environment.DROPOUT_VAR: '{"schedule": "linear"}'}


def test_training_resumes_only_a_run_of_the_same_patients(tmp_path, monkeypatch):
    from thrombseg.baselines.nnunet import workflow

    calls = []

    def fake_train(dataset_id, results_root, budget, configuration, trainer, device, resume, n_proc_da, log):
        calls.append((dataset_id, budget, configuration, trainer, resume))
        (fold / "checkpoint_final.pth").write_text("w")

    monkeypatch.setattr(workflow, "train", fake_train)
    fold = tmp_path / "trained" / "Dataset501_x" / "T__nnUNetPlans__2d" / "fold_all"
    settings = {"configuration": "2d", "trainer": "T", "budget": {"epochs": 2}, "dropout": None}
    fold.mkdir(parents=True)
    (fold / "checkpoint_latest.pth").write_text("old patients")
    (fold / "subjects.json").write_text(json.dumps({"train": ["a", "z"], "val": []}))
    workflow.train_experiment(fold / "checkpoint_final.pth", 501, tmp_path, settings, ["b", "a"])
    assert not (fold / "checkpoint_latest.pth").exists(), "a run of other patients was resumed"
    assert json.loads((fold / "subjects.json").read_text())["train"] == ["a", "b"]
    assert calls[-1] == (501, {environment.EPOCHS_VAR: "2"}, "2d", "T", True)
    (fold / "checkpoint_latest.pth").write_text("same patients")
    workflow.train_experiment(fold / "checkpoint_final.pth", 501, tmp_path, settings, ["a", "b"])
    assert (fold / "checkpoint_latest.pth").exists(), "a run of the same patients must resume"


def test_a_left_over_dataset_with_the_same_id_is_refused(cohort, tmp_path):
    from thrombseg.baselines.nnunet import workflow
    from thrombseg.core.errors import UserError

    res = tmp_path / "results"
    out = workflow.export_experiment(cohort, _train_patients(), res, DATASET_ID, "exp")
    assert out == res / "nnunet" / "raw" / f"Dataset{DATASET_ID}_exp"
    workflow.export_experiment(cohort, _train_patients()[:1], res, DATASET_ID, "exp")  # its own folder: replaced
    with pytest.raises(UserError, match=f"dataset id {DATASET_ID} .* also held by"):
        workflow.export_experiment(cohort, _train_patients(), res, DATASET_ID, "renamed")


def test_a_probability_model_gets_thrombsegs_subsets_postprocessing_and_metrics(cohort, tmp_path):
    """What rule nnunet_predict relies on: any probability function in place of a thrombseg network."""
    from thrombseg.inference.predict import ProbabilityModel, inference_settings, predict_subject

    seen = []

    def probability(case, keep):
        seen.append(keep)
        return np.asarray(case.labels["thrombus"], np.float32)  # a perfect model

    model = ProbabilityModel(CHANNELS, probability, "perfect.pth")
    table = predict_subject(cohort, "p4", "c", model, None, tmp_path / "out", "nn",
                            inference_settings({"subsets": "leave-one-out"}))
    assert len(table) == len(seen) == 1 + len(CHANNELS) and set(table["experiment"]) == {"nn"}
    assert sorted(len(k) for k in seen) == [4] * len(CHANNELS) + [5]
    assert (table["dice"] > 0.99).all() and (table["detected"] == 1).all()
    assert (tmp_path / "out" / "p4_thrombus_mask.nii.gz").is_file() and (tmp_path / "out" / "p4_metrics.tsv").is_file()
