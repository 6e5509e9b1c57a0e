"""Preprocessing stage: skull stripping, ANTs co-registration, labels, N4, harmonisation, QC.

Real ANTs registrations and real deepbet run here. Real public cases (../shared/data/real) are
downsampled to 2 mm where the test is about geometry, to stay fast on 2 cores; tests needing them
skip with a reason when the folder is absent. HD-BET runs its real code path up to the weight check.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "2")

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

ants = pytest.importorskip("ants")

from thrombseg.core.io import atomic_path  # noqa: E402
from thrombseg.preprocessing import _io  # noqa: E402
from thrombseg.preprocessing import harmonize as H  # noqa: E402
from thrombseg.preprocessing import registration as R  # noqa: E402
from thrombseg.preprocessing import skullstrip as S  # noqa: E402
from thrombseg.preprocessing.pipeline import preprocess_subject  # noqa: E402
from thrombseg.preprocessing.settings import resolve_config  # noqa: E402
from thrombseg.preprocessing.units import detect_adc_units  # noqa: E402
from thrombseg.synth import motion as M  # noqa: E402

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
FAST = {"threads": 2, "qc": {"montage": True}}
# the deepbet backend (about 3 s) where a test is about geometry, units or harmonisation, not the mask
DEEPBET = {**FAST, "skullstrip": {"backend": "deepbet"}}


def _real(*parts) -> Path:
    p = REAL.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real public case {p} not available (only shipped beside the dev checkout)")
    return p


def _at(img: ants.ANTsImage, spacing: float | None, label: bool = False) -> ants.ANTsImage:
    if spacing is None:
        return img
    return ants.resample_image(img, (spacing,) * 3, use_voxels=False, interp_type=1 if label else 0)


def _write(img: ants.ANTsImage, path: Path, label: bool = False) -> Path:
    a = img.numpy()
    return _io.atomic_write_nifti(_io.like(img, (a > 0.5) if label else a), path,
                                  dtype=np.uint8 if label else np.float32)


def _ingest(root: Path, sub: str, images: dict, labels: dict | None = None, drawn_on: dict | None = None,
            center: str = "real") -> Path:
    """Write an ingest-stage folder (canonical NIfTIs + sidecar) from ANTs images."""
    d = root / sub
    for k, img in images.items():
        _write(img, d / f"{sub}_{k}.nii.gz")
    for k, img in (labels or {}).items():
        _write(img, d / f"{sub}_{k}.nii.gz", label=True)
    side = {"subject": sub, "center": center, "split": "train",
            "labels": {k: {"drawn_on": v} for k, v in (drawn_on or {}).items()}, "warnings": []}
    (d / f"{sub}_ingest.json").write_text(json.dumps(side))
    return root


# --------------------------------------------------------------------------------------------------
# errors and HD-BET
# --------------------------------------------------------------------------------------------------
def test_hdbet_without_weights_gives_clear_error(tmp_path, monkeypatch):
    """Real HD-BET code path (HD_BET.paths default folder) up to the weight check; never downloads."""
    HD_BET_paths = pytest.importorskip("HD_BET.paths")
    default = tmp_path / "home" / "hd-bet_params" / "release_2.0.0"
    monkeypatch.setattr(HD_BET_paths, "folder_with_parameter_files", str(default))
    monkeypatch.delenv(S.HDBET_ENV, raising=False)
    img = _io.like(ants.from_numpy(np.zeros((8, 8, 8), np.float32)), np.random.default_rng(0).random((8, 8, 8)))
    configured = tmp_path / "configured_weights"
    configured.mkdir()
    t = time.perf_counter()
    with pytest.raises(S.HDBetWeightsMissing) as e:
        S.skull_strip(img, "hdbet", hdbet_weights=configured)
    msg = str(e.value)
    assert time.perf_counter() - t < 5, "must fail fast, not try a download"
    assert S.HDBET_CONFIG_KEY in msg and S.HDBET_DOWNLOAD_RULE in msg
    assert str(configured) in msg and str(default) in msg
    assert "deepbet" in msg  # offline alternative named
    assert not default.exists(), "nothing may be created or downloaded in HD-BET's default folder"
    # a complete model folder is found (layout check only; nothing is loaded)
    (configured / "fold_all").mkdir()
    for f in ("dataset.json", "plans.json", "fold_all/checkpoint_final.pth"):
        (configured / f).write_text("{}")
    assert S.hdbet_weights_folder(configured) == configured


def test_hdbet_missing_through_pipeline_and_cli(tmp_path, monkeypatch, real_isles):
    HD_BET_paths = pytest.importorskip("HD_BET.paths")
    monkeypatch.setattr(HD_BET_paths, "folder_with_parameter_files", str(tmp_path / "none"))
    monkeypatch.delenv(S.HDBET_ENV, raising=False)
    ing, sub = real_isles
    with pytest.raises(S.HDBetWeightsMissing, match="download_hdbet_weights"):
        preprocess_subject(ing, sub, tmp_path / "out", {"skullstrip": {"backend": "hdbet"}})
    assert not (tmp_path / "out" / sub).exists()  # nothing half-written
    from thrombseg.preprocessing.cli import main

    assert main(["subject", str(ing), sub, str(tmp_path / "out"), "--backend", "hdbet"]) == 2


def test_bad_inputs_name_file_and_problem(tmp_path, capsys):
    from thrombseg.preprocessing.cli import main

    missing = tmp_path / "nope.nii.gz"
    with pytest.raises(_io.PreprocessingError, match=r"nope\.nii\.gz: .*not found"):
        _io.load_image(missing)
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(b"not a nifti at all")
    with pytest.raises(_io.PreprocessingError, match=r"garbage\.nii\.gz: .*not a readable NIfTI"):
        _io.load_image(garbage)
    four = tmp_path / "four.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4, 3), np.float32), np.eye(4)), str(four))
    with pytest.raises(_io.PreprocessingError, match=r"four\.nii\.gz: .*3-D"):
        _io.load_image(four)
    nan = tmp_path / "nan.nii.gz"
    a = np.random.default_rng(0).random((5, 5, 5)).astype(np.float32)
    a[1, 1, 1] = np.nan
    nib.save(nib.Nifti1Image(a, np.eye(4)), str(nan))
    with pytest.raises(_io.PreprocessingError, match=r"nan\.nii\.gz: .*NaN"):
        _io.load_image(nan)
    # through the CLI: exit code 2 and one line, no traceback
    (tmp_path / "ing" / "s1").mkdir(parents=True)
    garbage.rename(tmp_path / "ing" / "s1" / "s1_dwi.nii.gz")
    assert main(["subject", str(tmp_path / "ing"), "s1", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "s1_dwi.nii.gz" in err and "Traceback" not in err
    with pytest.raises(_io.PreprocessingError, match="unknown option 'preprocess.skullstrip.bakend'"):
        resolve_config({"preprocess": {"skullstrip": {"bakend": "ants"}}})
    with pytest.raises(_io.PreprocessingError, match="preprocess.deterministic must be true or false, got 'no'"):
        resolve_config({"deterministic": "no"})  # a string would otherwise count as true
    with pytest.raises(_io.PreprocessingError, match="preprocess.threads must be an integer >= 1, got 0"):
        resolve_config({"threads": 0})
    with pytest.raises(_io.PreprocessingError, match="vessel_margin_mm must be a number >= 0 .*'8 mm'"):
        resolve_config({"skullstrip": {"vessel_margin_mm": "8 mm"}})
    with pytest.raises(_io.PreprocessingError, match="unknown skull-strip backend"):
        S.skull_strip(_io.like(ants.from_numpy(np.zeros((4, 4, 4), np.float32)), a), "bet2")


def test_infarct_label_of_an_earlier_version_is_found(tmp_path):
    """Ingest and preprocessing folders of an earlier version name the infarct label ``_lesion``."""
    assert _io.label_file(tmp_path, "p1", "infarct") is None
    (tmp_path / "p1_lesion.nii.gz").write_bytes(b"")
    assert _io.label_file(tmp_path, "p1", "infarct") == tmp_path / "p1_lesion.nii.gz"
    (tmp_path / "p1_infarct.nii.gz").write_bytes(b"")
    assert _io.label_file(tmp_path, "p1", "infarct") == tmp_path / "p1_infarct.nii.gz"
    assert _io.label_file(tmp_path, "p1", "thrombus") is None


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "x.nii.gz"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------------
# labels and registration
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_twenty_voxel_thrombus_survives_and_keeps_volume(seed):
    """A 20-voxel thrombus on an anisotropic SWI-like grid moved by a random rigid motion."""
    rng = np.random.default_rng(seed)
    swi = ants.from_numpy(np.zeros((60, 60, 30), np.float32), origin=(10.0, -5.0, 3.0), spacing=(0.9, 0.9, 2.0))
    lab = np.zeros(swi.shape, np.float32)
    lab[30:35, 28:30, 14:16] = 1  # 5 x 2 x 2 = 20 voxels, an M1-like plug
    label = _io.like(swi, lab)
    ref = ants.from_numpy(np.zeros((70, 70, 70), np.float32), origin=(0.0, -15.0, -20.0), spacing=(1.0, 1.0, 1.0))
    centre = R.physical_points(swi, lab > 0).mean(axis=0)
    m = M.random_rigid(rng, 15, 10, center=centre)
    moved, info = R.move_label(label, ref, m, return_info=True)
    assert int(lab.sum()) == 20
    assert not info["lost"] and moved.numpy().sum() >= 1
    assert 0.9 <= info["volume_ratio"] <= 1.1, info
    # it lands where the motion says
    got = R.physical_points(ref, moved.numpy() > 0.5).mean(axis=0)
    want = M.transform_points(np.linalg.inv(m), centre[None])[0]
    assert np.linalg.norm(got - want) < 1.5


def test_label_identity_is_exact_and_many_pieces_survive(real_data):
    msk = _io.load_image(_real("isles22", "sub-strokecase0001", "sub-strokecase0001_ses-0001_msk.nii.gz"),
                         allow_constant=True)
    moved = R.move_label(msk, msk, np.eye(4)).numpy() > 0.5
    assert np.array_equal(moved, msk.numpy() > 0.5)
    # shift by a third of a voxel: 38 pieces (smallest 1 voxel) all survive, volume within 10 %
    import cc3d

    m = np.eye(4)
    m[:3, 3] = [0.7, -0.6, 0.5]
    moved, info = R.move_label(msk, msk, m, return_info=True)
    n_src = cc3d.connected_components((msk.numpy() > 0.5).astype(np.uint8), connectivity=26).max()
    n_out = cc3d.connected_components((moved.numpy() > 0.5).astype(np.uint8), connectivity=26).max()
    assert 0.9 <= info["volume_ratio"] <= 1.1
    assert n_out >= n_src - 2  # neighbouring pieces may touch after interpolation, none vanish


def test_registration_recovers_random_rigid_motion_real_ms(real_data):
    """Real MS FLAIR (fixed) vs T2 moved by known rigid motions <= 15 deg, <= 10 mm: median <= 1 mm."""
    flair = _at(_io.load_image(_real("ms_lesjak2017", "patient07", "FLAIR.nii.gz")), 2.0)
    t2 = _at(_io.load_image(_real("ms_lesjak2017", "patient07", "T2.nii.gz")), 2.0)
    brain = flair.numpy() > 0
    pts = R.physical_points(flair, brain, 4000)
    mask = _io.like(flair, brain.astype(np.float32))
    for seed in (11, 12):
        s = M.random_rigid(np.random.default_rng(seed), 15, 10, center=pts.mean(axis=0))
        ang, _ = M.motion_magnitude(s)
        assert ang <= 15.0
        reg = R.register(flair, M.move_header(t2, s), fixed_mask=mask)  # oblique header, exact motion
        err = M.registration_error_mm(reg.matrix, s, pts)
        assert np.median(err) <= 1.0, (seed, np.median(err))
        assert reg.mi_after > reg.mi_before


def test_registration_auto_init_handles_lost_header(real_data):
    """Moving image whose header puts it 60 mm away: the centre-of-mass start is tried and wins."""
    flair = _at(_io.load_image(_real("ms_lesjak2017", "patient07", "FLAIR.nii.gz")), 3.0)
    far = flair.clone()
    far.set_origin(tuple(np.asarray(flair.origin) + np.array([60.0, -40.0, 25.0])))
    reg = R.register(flair, far, reg_spacing=3.0)
    assert reg.init == "com" and {t["init"] for t in reg.tried} == {"identity", "com"}
    pts = R.physical_points(flair, flair.numpy() > 0, 2000)
    truth = np.eye(4)
    truth[:3, 3] = -np.array([60.0, -40.0, 25.0])  # S maps moving points back: S(T(x)) = x
    assert np.median(M.registration_error_mm(reg.matrix, truth, pts)) < 1.0


# --------------------------------------------------------------------------------------------------
# real cases through the whole stage
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_isles(tmp_path_factory):
    base = REAL / "isles22" / "sub-strokecase0001"
    if not base.is_dir():
        pytest.skip(f"real ISLES'22 case not available at {base}")
    root = tmp_path_factory.mktemp("ingest")
    _ingest(root, "isles1",
            {"dwi": _io.load_image(base / "sub-strokecase0001_ses-0001_dwi.nii.gz"),
             "adc": _io.load_image(base / "sub-strokecase0001_ses-0001_adc.nii.gz")},
            {"infarct": _io.load_image(base / "sub-strokecase0001_ses-0001_msk.nii.gz", allow_constant=True)},
            {"infarct": "dwi"}, center="isles")
    return root, "isles1"


def test_real_isles_dwi_adc(real_isles, tmp_path):
    ing, sub = real_isles
    meta = preprocess_subject(ing, sub, tmp_path, FAST)
    d = tmp_path / sub
    assert meta["reference"] == "dwi" and meta["sequences"] == ["dwi", "adc"]
    assert meta["registration"]["adc"]["init"] == "follows dwi"  # same acquisition, same transform
    for f in ("dwi", "adc", "brainmask", "icvmask", "infarct"):
        assert (d / f"{sub}_{f}.nii.gz").is_file()
    assert (d / f"{sub}_qc.png").stat().st_size > 10_000
    assert not [p for p in d.parent.iterdir() if p.name.startswith(".")]  # no temp leftovers
    assert meta["adc_units"]["factor_to_1e-3_mm2_s"] == 1.0
    assert 900 < meta["brain_volume_ml"] < 1800
    lab = meta["labels"]["infarct"]
    assert lab["volume_ratio"] == pytest.approx(1.0, abs=0.02) and lab["fraction_in_icv"] > 0.99
    adc = nib.load(str(d / f"{sub}_adc.nii.gz"))
    m = np.asarray(nib.load(str(d / f"{sub}_brainmask.nii.gz")).dataobj) > 0
    assert 0.5 < np.median(np.asarray(adc.dataobj)[m]) < 1.5  # 1e-3 mm^2/s
    assert np.allclose(adc.affine, meta["grid"]["affine_ras"], atol=1e-4)
    for step in ("load", "skullstrip", "registration", "n4", "labels", "write", "total"):
        assert step in meta["timings_s"]
    assert meta["skullstrip"]["backend"] == S.DEFAULT_BACKEND


def test_real_isles_raw_adc_units_converted(real_isles, tmp_path):
    """The same patient stored with raw ADC integers (1e-6 mm^2/s, other ISLES'22 sites) ends in 1e-3."""
    ing, sub = real_isles
    imgs = {k: _io.load_image(ing / sub / f"{sub}_{k}.nii.gz") for k in ("dwi", "adc")}
    adc_native = imgs["adc"].numpy()
    imgs["adc"] = _io.like(imgs["adc"], np.round(adc_native * 1000.0))
    _ingest(tmp_path / "rawadc", sub, imgs)
    cfg = {**DEEPBET, "qc": {"montage": False}, "n4": {"enabled": False}}
    meta = preprocess_subject(tmp_path / "rawadc", sub, tmp_path / "out", cfg)
    assert meta["adc_units"]["factor_to_1e-3_mm2_s"] == 1e-3
    assert "1e-6" in meta["adc_units"]["detected"]
    adc = np.asarray(nib.load(str(tmp_path / "out" / sub / f"{sub}_adc.nii.gz")).dataobj)
    m = np.asarray(nib.load(str(tmp_path / "out" / sub / f"{sub}_brainmask.nii.gz")).dataobj) > 0
    assert 0.5 < np.median(adc[m]) < 1.5
    assert np.median(adc[m]) == pytest.approx(np.median(adc_native[adc_native > 0]), rel=0.25)


def test_adc_unit_detection():
    rng = np.random.default_rng(0)
    v = rng.normal(0.85, 0.3, 10000).clip(0.05, 4)
    assert detect_adc_units(v)[0] == 1.0
    assert detect_adc_units(v * 1000)[0] == 1e-3
    assert detect_adc_units(v / 1000)[0] == 1e3
    with pytest.raises(_io.PreprocessingError, match="cannot tell the ADC unit"):
        detect_adc_units(v * 30)


def test_real_skull_on_t2_mask_excludes_skull_keeps_infarct(real_data, tmp_path):
    from scipy import ndimage

    t2 = _io.load_image(_real("chronic_stroke_t2", "T2.nii.gz"))
    les = _io.load_image(_real("chronic_stroke_t2", "lesionT2.nii.gz"), allow_constant=True)
    _ingest(tmp_path / "ing", "chronic", {"flair": t2}, {"infarct": les}, {"infarct": "flair"})
    meta = preprocess_subject(tmp_path / "ing", "chronic", tmp_path / "out", FAST)
    assert 1000 < meta["brain_volume_ml"] < 1900 and meta["brain_volume_ml"] <= meta["icv_volume_ml"] < 1900

    def native(name):  # back on the native grid
        return R.resample(_io.load_image(tmp_path / "out" / "chronic" / f"chronic_{name}.nii.gz",
                                         allow_constant=True), t2, None, "nearestneighbor").numpy() > 0.5

    brain, icv = native("brainmask"), native("icvmask")
    a = t2.numpy()
    fg = ndimage.binary_closing(a > 0.1 * np.percentile(a, 99), iterations=2)
    head = np.stack([ndimage.binary_fill_holes(fg[:, :, k]) for k in range(a.shape[2])], axis=2)
    # outer 6 mm of the head in each axial slice (scalp + skull); the A-P ends are left out because the
    # field of view cuts the head there (its edge is not the scalp)
    shell = head & ~np.stack([ndimage.binary_erosion(head[:, :, k], iterations=6) for k in range(a.shape[2])], axis=2)
    shell[:, :40] = False
    shell[:, 135:] = False
    # Both leave the scalp/skull shell out. The stripping mask also keeps the vessel margin under the
    # brain, where the posterior fossa comes close to the head's outline in axial slices (measured:
    # 1.8 % of the shell without the margin, 4.0 % with the default 8 mm).
    for mask, limit in ((brain, 0.03), (icv, 0.05)):
        assert (mask & shell).sum() / shell.sum() < limit
        assert mask.sum() < 0.75 * head.sum()
    infarct = les.numpy() > 0.5
    # the stripped image keeps the whole (CSF-like, cortical) chronic infarct
    assert (icv & infarct).sum() / infarct.sum() > 0.99
    stripped = R.resample(_io.load_image(tmp_path / "out" / "chronic" / "chronic_flair.nii.gz"), t2).numpy()
    assert (stripped[infarct] > 0).mean() > 0.99
    assert meta["labels"]["infarct"]["volume_ratio"] == pytest.approx(1.0, abs=0.02)
    assert meta["labels"]["infarct"]["fraction_in_icv"] > 0.99


@pytest.fixture(scope="module")
def ms_case(tmp_path_factory):
    """MS patient, 4 sequences at 2 mm: FLAIR reference; 'swi' (the T2) and its 'phase' (stand-in:
    the T1) share a known rigid motion, a 20-voxel thrombus is drawn on the moved grid; T1POST unmoved."""
    if not (REAL / "ms_lesjak2017" / "patient07").is_dir():
        pytest.skip(f"real MS case not available at {REAL / 'ms_lesjak2017' / 'patient07'}")
    tmp_path = tmp_path_factory.mktemp("ms")
    p = ("ms_lesjak2017", "patient07")
    flair = _at(_io.load_image(_real(*p, "FLAIR.nii.gz")), 2.0)
    t2 = _at(_io.load_image(_real(*p, "T2.nii.gz")), 2.0)
    t1 = _at(_io.load_image(_real(*p, "T1.nii.gz")), 2.0)
    t1post = _at(_io.load_image(_real(*p, "T1POST.nii.gz")), 2.0)
    les = _at(_io.load_image(_real(*p, "consensus_gt.nii.gz"), allow_constant=True), 2.0, label=True)
    brain = flair.numpy() > 0
    pts = R.physical_points(flair, brain, 3000)
    s = M.random_rigid(np.random.default_rng(5), 15, 10, center=pts.mean(axis=0))
    swi, phase = M.move_header(t2, s), M.move_header(t1, s)  # moved between series: oblique headers
    th = np.zeros(swi.shape, np.float32)
    c = np.round(np.argwhere(swi.numpy() > np.percentile(swi.numpy(), 90)).mean(axis=0)).astype(int)
    th[c[0]:c[0] + 5, c[1]:c[1] + 2, c[2]:c[2] + 2] = 1  # 20 voxels
    thrombus = _io.like(swi, th)
    # the MS lesions stand in for the infarct label
    _ingest(tmp_path / "ing", "ms07", {"flair": flair, "swi": swi, "phase": phase, "t1": t1post},
            {"infarct": les, "thrombus": thrombus}, {"infarct": "flair", "thrombus": "swi"}, center="ms")
    cfg = {**DEEPBET, "reference": "flair"}
    meta = preprocess_subject(tmp_path / "ing", "ms07", tmp_path / "pre", cfg)
    return tmp_path, meta, s, pts, flair, swi, th


def test_real_ms_four_sequences_phase_follows_magnitude(ms_case):
    tmp_path, meta, s, pts, flair, swi, th = ms_case
    regs = meta["registration"]
    assert set(regs) == {"swi", "phase", "t1"}
    assert regs["phase"]["init"] == "follows swi" and regs["phase"]["matrix"] == regs["swi"]["matrix"]
    err = M.registration_error_mm(np.asarray(regs["swi"]["matrix"]), s, pts)
    assert np.median(err) <= 1.0
    assert regs["t1"]["mi_after"] >= regs["t1"]["mi_before"] - 1e-3
    th_info = meta["labels"]["thrombus"]
    assert 0.9 <= th_info["volume_ratio"] <= 1.1 and not th_info["lost"]
    got = R.physical_points(flair, R.resample(_io.load_image(tmp_path / "pre" / "ms07" / "ms07_thrombus.nii.gz",
                                                             allow_constant=True), flair).numpy() > 0.5)
    want = M.transform_points(s, R.physical_points(swi, th > 0))
    assert np.linalg.norm(got.mean(0) - want.mean(0)) < 2.0
    assert meta["labels"]["infarct"]["volume_ratio"] == pytest.approx(1.0, abs=0.05)
    shapes = {nib.load(str(f)).shape for f in (tmp_path / "pre" / "ms07").glob("*.nii.gz")}
    assert len(shapes) == 1  # one output grid
    assert meta["n4"] == {"flair": True, "swi": True, "phase": False, "t1": True}


def test_real_ms_harmonize_and_qc(ms_case):
    tmp_path = ms_case[0]
    # harmonisation: landmarks from this (training) patient, applied to it
    lm = H.fit_landmarks(tmp_path / "pre", ["ms07"], tmp_path / "landmarks.json")
    lmj = json.loads(lm.read_text())
    assert lmj["fitted_on"] == ["ms07"] and set(lmj["landmarks"]) == {"flair", "swi", "t1"}
    assert "phase" in lmj["skipped"]
    info = H.harmonize_subject(tmp_path / "pre", "ms07", lm, tmp_path / "arr")
    d = tmp_path / "arr" / "ms07"
    for seq in ("flair", "swi", "phase", "t1"):
        a = np.load(d / f"ms07_{seq}.npy", mmap_mode="r")
        assert a.dtype == np.float32 and a.shape == tuple(info["shape"])
    m = np.load(d / "ms07_brainmask.npy").astype(bool)
    f = np.load(d / "ms07_flair.npy")
    assert abs(np.median(f[m])) < 0.05 and 0.8 < np.subtract(*np.percentile(f[m], [75, 25])) / 1.349 < 1.2
    assert np.load(d / "ms07_label-thrombus.npy").dtype == np.uint8
    assert (d / "ms07_label-infarct.npy").is_file() and (d / "ms07_arrays.json").is_file()
    icv = np.load(d / "ms07_icvmask.npy").astype(bool)
    assert (icv >= m).all() and (f[~icv] == 0).all()

    # per-center QC table
    from thrombseg.preprocessing.qc import write_center_qc

    df = write_center_qc([tmp_path / "pre" / "ms07" / "ms07_preproc.json"], tmp_path / "qc_ms.tsv", center="ms")
    assert len(df) == 1 and "mi_after_swi" in df.columns and "p99_flair" in df.columns
    assert not df["outlier"].iloc[0], df["flags"].iloc[0]


@pytest.mark.slow
def test_ants_backend_on_real_dwi(real_data):
    """The offline template backend on a real 2 mm DWI agrees with deepbet."""
    dwi = _io.load_image(_real("isles22", "sub-strokecase0001", "sub-strokecase0001_ses-0001_dwi.nii.gz"))
    a = S.skull_strip(dwi, "ants").numpy() > 0.5
    b = S.skull_strip(dwi, "deepbet").numpy() > 0.5
    assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.93


def test_qc_flags_outliers(tmp_path):
    from thrombseg.preprocessing.qc import write_center_qc

    paths = []
    for i, vol in enumerate([1300, 1350, 1280, 1420, 1310, 3000]):
        meta = {"subject": f"s{i}", "center": "c1", "reference": "swi", "sequences": ["swi", "dwi"],
                "skullstrip": {"backend": "deepbet"}, "brain_volume_ml": vol,
                "registration": {"dwi": {"mi_before": 0.1, "mi_after": 0.4 if i != 2 else 0.05}},
                "intensity": {"swi": {"p01": 10, "p50": 500 + i, "p99": 900}},
                "labels": {"thrombus": {"volume_moved_mm3": 100, "volume_ratio": 1.0}},
                "timings_s": {"total": 20}}
        paths.append(tmp_path / f"s{i}.json")
        paths[-1].write_text(json.dumps(meta))
    df = write_center_qc(paths, tmp_path / "c1.tsv", center="c1")
    assert df.loc[df.subject == "s5", "outlier"].item() and "brain_volume" in df.loc[df.subject == "s5", "flags"].item()
    assert "lowered MI" in df.loc[df.subject == "s2", "flags"].item()
    assert not df.loc[df.subject == "s0", "outlier"].item()
    assert (tmp_path / "c1.tsv").read_text().startswith("subject\tcenter")


def test_cli_hook_plugs_into_a_parser():
    import argparse

    from thrombseg.preprocessing.cli import add_subparsers

    p = argparse.ArgumentParser(prog="thrombseg")
    add_subparsers(p.add_subparsers(dest="command"))
    a = p.parse_args(["preprocess", "subject", "in", "s1", "out", "--backend", "ants"])
    assert a.command == "preprocess" and a.preprocess_command == "subject" and a.backend == "ants"
    a = p.parse_args(["preprocess", "fit-landmarks", "pre", "lm.json", "--subjects", "a", "b"])
    assert a.subjects == ["a", "b"] and callable(a.func)


# --------------------------------------------------------------------------------------------------
# slow: full-resolution timing and the synthetic cohort
# --------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_real_ms_four_sequences_full_resolution_under_60s(real_data, tmp_path):
    p = ("ms_lesjak2017", "patient07")
    imgs = {k: _io.load_image(_real(*p, f)) for k, f in
            (("t2star", "T2.nii.gz"), ("flair", "FLAIR.nii.gz"), ("t1", "T1.nii.gz"), ("dwi", "T1POST.nii.gz"))}
    _ingest(tmp_path / "ing", "ms07", imgs)
    S.skull_strip(imgs["flair"], "deepbet")  # model load outside the timing (once per worker)
    meta = preprocess_subject(tmp_path / "ing", "ms07", tmp_path / "out", FAST)
    assert meta["timings_s"]["total"] <= 60, meta["timings_s"]


@pytest.mark.slow
def test_synthetic_cohort_default_backend_dice(tmp_path):
    synth = pytest.importorskip("thrombseg.synth")
    from thrombseg.ingest import ingest_from_sheet

    sheet = synth.generate_cohort(tmp_path / "raw", n_per_center=1, seed=3, size="demo", n_jobs=1)
    import pandas as pd

    df = pd.read_csv(sheet, sep="\t", dtype=str).fillna("")
    for sub in df["subject"]:
        ingest_from_sheet(sheet, sub, tmp_path / "ingest" / sub)
        meta = preprocess_subject(tmp_path / "ingest", sub, tmp_path / "pre", {**FAST, "qc": {"montage": False}})
        truth = _io.load_image(tmp_path / "raw" / "derivatives" / "truth" / f"sub-{sub}" /
                               f"sub-{sub}_desc-brain_mask.nii.gz", allow_constant=True)
        mask = R.resample(_io.load_image(tmp_path / "pre" / sub / f"{sub}_brainmask.nii.gz", allow_constant=True),
                          truth, None, "nearestneighbor").numpy() > 0.5
        t = truth.numpy() > 0.5
        dice = 2 * (mask & t).sum() / (mask.sum() + t.sum())
        assert dice >= 0.95, (sub, dice)
        if "thrombus" in meta["labels"]:
            assert 0.9 <= meta["labels"]["thrombus"]["volume_ratio"] <= 1.1


def test_vessel_margin_fills_the_gap_under_the_brain_not_the_convexity():
    from thrombseg.preprocessing.pipeline import _grow_into_hull

    # two "temporal lobes" joined above: the notch between them (where the ICA runs) is concave
    z, y, x = np.mgrid[:40, :40, :40]
    lobes = ((x - 12) ** 2 + (y - 20) ** 2 + (z - 20) ** 2 <= 81) | ((x - 28) ** 2 + (y - 20) ** 2 + (z - 20) ** 2 <= 81)
    mask = lobes | ((abs(y - 20) <= 8) & (z >= 24) & (z <= 29) & (x >= 8) & (x <= 32))
    grown = _grow_into_hull(mask, (1.0, 1.0, 1.0), 4.0)
    assert (grown >= mask).all()
    # indices are [z, y, x]: in the notch under the bridge, 1 mm from a lobe, inside the hull
    assert not mask[14, 20, 20] and grown[14, 20, 20]
    # 2 mm beyond a lobe's outer side (a convexity): within the margin but outside the hull
    assert not grown[20, 20, 39] and not grown[20, 31, 12]
    assert (_grow_into_hull(mask, (1.0, 1.0, 1.0), 0.0) == mask).all()
    assert not _grow_into_hull(np.zeros((5, 5, 5), bool), (1, 1, 1), 4.0).any()


def test_two_runs_are_bit_identical(tmp_path):
    """Default (deterministic) config: ITK single-threaded, so seeded ANTs registrations (template
    skull strip, co-registrations) repeat exactly even when the patient asks for 2 threads.
    Subprocesses, because ITK reads its thread count once per process. Real anatomy: the MNI152
    template nilearn ships, with two sequences moved as if acquired separately."""
    import subprocess
    import sys

    from nilearn import datasets

    nib.save(datasets.load_mni152_template(resolution=2), tmp_path / "mni.nii.gz")
    t1 = _io.load_image(tmp_path / "mni.nii.gz")
    a = t1.numpy()
    rng = np.random.default_rng(3)
    centre = R.physical_points(t1, a > 0, 2000).mean(axis=0)
    swi = M.move_header(_io.like(t1, a.max() - a * (a > 0)), M.random_rigid(rng, 10, 8, center=centre))
    dwi = M.move_header(_io.like(t1, np.sqrt(a)), M.random_rigid(rng, 10, 8, center=centre))
    ing = _ingest(tmp_path / "ing", "mni", {"flair": t1, "swi": swi, "dwi": dwi})
    outs = []
    for run in ("a", "b"):
        out = tmp_path / run
        r = subprocess.run([sys.executable, "-m", "thrombseg.cli", "preprocess", "subject", str(ing), "mni",
                            str(out), "--threads", "2"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-2000:]
        outs.append(out / "mni")
    meta = [json.loads((o / "mni_preproc.json").read_text()) for o in outs]
    mats = [{s: r["matrix"] for s, r in m["registration"].items() if "matrix" in r} for m in meta]
    assert len(mats[0]) >= 2 and mats[0] == mats[1]
    assert meta[0]["skullstrip"]["volume_ml"] == meta[1]["skullstrip"]["volume_ml"]
    names = sorted(p.name for p in outs[0].glob("*.nii.gz"))
    assert len(names) >= 5 and names == sorted(p.name for p in outs[1].glob("*.nii.gz"))
    for n in names:
        a, b = (nib.load(str(o / n)) for o in outs)
        assert np.array_equal(a.affine, b.affine) and np.array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj)), n
