"""Properties of the embedded synthetic cohort (thrombseg.synth), checked on generated data.

One tiny cohort (the 4 default centers x 1 patient, demo size) is generated once per module; the
determinism test uses a cheap custom center. The full demo cohort is a ``slow`` test.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

import thrombseg.synth.cohort as cohort_mod
from thrombseg.core.fs import OutputError
from thrombseg.core.sequences import LABELS, SEQUENCES
from thrombseg.synth import (
    DEFAULT_CENTERS,
    SHEET_COLUMNS,
    PatientTransform,
    generate_cohort,
    sequence_spacing,
    thrombus_presence,
)
from thrombseg.synth.atlas import MCA_DEEP, RIGHT_OFFSET, get_atlas
from thrombseg.synth.centers import CONFIG_KEY, validate_centers
from thrombseg.synth.io import make_image, save_nifti, write_json
from thrombseg.synth.pathology import NEGATIVE_KINDS, RECANALISED, Streams, draw_pathology
from thrombseg.synth.vessels import SLOW

TINY_CENTER = {
    "name": "tiny", "field_strength": 3.0, "susceptibility": "swi",
    "sequences": {"swi": {"spacing": [2.0, 2.0, 3.0], "orientation": "LPS", "fov_mm": [190, 226, 130]},
                  "phase": {"kind": "filtered", "storage": "radians"},
                  "dwi": {"spacing": [2.5, 2.5, 5.0], "orientation": "RAS", "fov_mm": [220, 220, 150]},
                  "adc": {"scale": 1e6, "dtype": "float32"}},
    "noise": 0.03, "bias": 0.2, "intensity_scale": 1000.0, "dtype": "int16",
}
# The demo cohort's plan (4 centers x 8, seed 0) as versions without thrombus-negative patients drew it.
DEMO_PLAN_SITES = ("BA M1 M1 M2 M1 PCA M2 M1 M2 ACA M1 ICA M2 M2 M1 M2 M1 M1 M1 M1 ICA M1 M1 M2 M2 ACA ICA M1 M1 M1 "
                   "M2 M1").split()
DEMO_PLAN_LOW_CONTRAST = [4, 12, 14, 21, 28]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    t0 = time.perf_counter()
    sheet = generate_cohort(out, n_per_center=1, seed=3, size="demo", n_jobs=1)
    assert time.perf_counter() - t0 < 120
    return sheet


@pytest.fixture(scope="module")
def sheet_df(cohort) -> pd.DataFrame:
    return pd.read_csv(cohort, sep="\t", dtype=str, keep_default_na=False)


def _truth(root: Path, sid: str) -> dict:
    return json.loads((root / "derivatives" / "truth" / f"sub-{sid}" / f"sub-{sid}_truth.json").read_text())


def _center(name: str) -> dict:
    return {c["name"]: c for c in validate_centers(DEFAULT_CENTERS)}[name]


def _mask_mni(img: nib.Nifti1Image, tf: PatientTransform) -> np.ndarray:
    ijk = np.argwhere(np.asarray(img.dataobj) > 0)
    world = (img.affine[:3, :3] @ ijk.T + img.affine[:3, 3:4]).T
    return tf.world_to_mni(world)


def _sus_col(row) -> str:
    return "swi" if row["swi"] else "t2star"


# ---------------------------------------------------------------------------------------------------
def test_tree_and_sample_sheet(cohort, sheet_df):
    root = cohort.parent
    assert cohort.name == "subjects.tsv"
    assert cohort.read_text().splitlines()[0].split("\t") == SHEET_COLUMNS
    assert list(sheet_df.columns) == SHEET_COLUMNS
    assert sorted(sheet_df.center.unique()) == ["ctrA", "ctrB", "ctrC", "ctrD"]
    assert (sheet_df.split == "").all()
    for _, row in sheet_df.iterrows():
        assert re.fullmatch(r"[A-Za-z0-9]+", row.subject)
        assert row.thrombus_mask and row.infarct_mask
        for col in (*SEQUENCES, *LABELS):
            if row[col]:
                assert not Path(row[col]).is_absolute()
                assert (root / row[col]).is_file(), row[col]
        assert (root / "derivatives" / "truth" / f"sub-{row.subject}" / f"sub-{row.subject}_desc-brain_mask.nii.gz").is_file()
    assert json.loads((root / "dataset_description.json").read_text())["BIDSVersion"]
    parts = pd.read_csv(root / "participants.tsv", sep="\t", dtype=str)
    assert {"participant_id", "center", "age", "sex"} <= set(parts.columns)
    assert list(parts.participant_id) == [f"sub-{s}" for s in sheet_df.subject]
    for c in ("ctrA", "ctrB", "ctrC", "ctrD"):
        png = root / "qc" / f"montage_{c}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    t = _truth(root, sheet_df.subject[0])
    for key in ("center", "artery_segment", "hemisphere", "territory", "thrombus_volume_mm3", "infarct_volume_ml",
                "infarct_n_pieces", "low_contrast", "n_microbleeds", "sequences", "world_to_mni"):
        assert key in t


def test_project_validator_accepts_sheet(cohort):
    sheet = pytest.importorskip("thrombseg.sheet")
    sheet.validate_sheet(cohort, centers=["ctrA", "ctrB", "ctrC", "ctrD"], check_images=True)


def test_valid_3d_images_and_affines(cohort, sheet_df):
    root = cohort.parent
    for _, row in sheet_df.iterrows():
        files = [row[c] for c in (*SEQUENCES, *LABELS) if row[c]]
        files.append(f"derivatives/truth/sub-{row.subject}/sub-{row.subject}_desc-brain_mask.nii.gz")
        for f in files:
            img = nib.load(root / f)
            assert img.ndim == 3, f
            aff = img.affine
            assert np.isfinite(aff).all() and abs(np.linalg.det(aff[:3, :3])) > 1e-3, f
            q, qcode = img.header.get_qform(coded=True)
            s, scode = img.header.get_sform(coded=True)
            assert qcode > 0 and scode > 0, f
            assert np.allclose(q, s, atol=1e-4), f
            data = np.asanyarray(img.dataobj)
            assert np.isfinite(data).all(), f
            if "label-" in f or "desc-brain" in f:
                assert data.dtype == np.uint8 and set(np.unique(data)) <= {0, 1}, f
                assert data.any(), f


def test_sequences_and_spacings_as_configured(cohort, sheet_df):
    root = cohort.parent
    for _, row in sheet_df.iterrows():
        c = _center(row.center)
        t = _truth(root, row.subject)
        seqs = c["sequences"]
        for col in SEQUENCES:
            key = CONFIG_KEY[col]
            if key not in seqs:
                assert row[col] == "", (row.subject, col)
                continue
            if not row[col]:  # only the configured losses may be missing
                assert key in t["missing_sequences"], (row.subject, col)
                continue
            img = nib.load(root / row[col])
            grid_seq = {"phase": c["susceptibility"], "adc": "dwi"}.get(key, key)
            want = sequence_spacing(c, grid_seq, "demo")
            assert np.allclose(img.header.get_zooms()[:3], want, atol=1e-4), (row.subject, col)
            assert "".join(nib.aff2axcodes(img.affine)) == seqs[grid_seq]["orientation"], (row.subject, col)
            # obliquity: tilt of the grid's inferior-superior axis away from the scanner z axis
            k = next(i for i, a in enumerate(seqs[grid_seq]["orientation"]) if a in "SI")
            axis = img.affine[:3, k] / np.linalg.norm(img.affine[:3, k])
            ang = np.degrees(np.arccos(abs(axis[2])))
            assert abs(ang - float(seqs[grid_seq].get("oblique_deg", c["obliquity_deg"]))) < 0.5, (row.subject, col)
        if row.center == "ctrB":
            assert row.t2star and not row.swi and not row.phase
        if row.center == "ctrC":
            assert not row.flair
            adc = nib.load(root / row.adc)
            assert adc.get_data_dtype() == np.uint16
            a = np.asarray(adc.dataobj)
            assert a.max() <= 4095 and a.max() > 2000
        # masks on the grids they are drawn on
        sus = nib.load(root / row[_sus_col(row)])
        thr = nib.load(root / row.thrombus_mask)
        assert thr.shape == sus.shape and np.allclose(thr.affine, sus.affine, atol=1e-4)
        ref = row.dwi or row.flair or row[_sus_col(row)]
        inf = nib.load(root / row.infarct_mask)
        refimg = nib.load(root / ref)
        assert inf.shape == refimg.shape and np.allclose(inf.affine, refimg.affine, atol=1e-4)
        if row.phase:
            assert nib.load(root / row.phase).shape == sus.shape


def test_volumes_in_range(cohort, sheet_df):
    root = cohort.parent
    for _, row in sheet_df.iterrows():
        t = _truth(root, row.subject)
        thr = nib.load(root / row.thrombus_mask)
        vox = float(np.prod(thr.header.get_zooms()[:3]))
        v_thr = float(np.asarray(thr.dataobj).sum() * vox)
        assert v_thr == pytest.approx(t["thrombus_volume_mm3"], rel=1e-3)
        assert 10.0 <= v_thr <= 800.0, (row.subject, v_thr)
        assert 15.0 <= t["thrombus_volume_true_mm3"] <= 650.0
        inf = nib.load(root / row.infarct_mask)
        m = np.asarray(inf.dataobj) > 0
        v_inf = float(m.sum() * np.prod(inf.header.get_zooms()[:3]) / 1000.0)
        assert v_inf == pytest.approx(t["infarct_volume_ml"], rel=1e-3)
        assert 1.0 <= v_inf <= 60.0, (row.subject, v_inf)
        n = ndi.label(m, structure=np.ones((3, 3, 3)))[1]
        assert n == t["infarct_n_pieces"] >= 1
        assert 0 <= t["n_microbleeds"] <= 5


def test_thrombus_inside_its_artery_and_dark_on_susceptibility(cohort, sheet_df):
    root = cohort.parent
    for _, row in sheet_df.iterrows():
        t = _truth(root, row.subject)
        tf = PatientTransform.from_dict(t["world_to_mni"])
        thr = nib.load(root / row.thrombus_mask)
        mni = _mask_mni(thr, tf)
        centre = np.asarray(t["thrombus_centreline_mni"])
        d = np.min(np.linalg.norm(mni[:, None, :] - centre[None], axis=2), axis=1)
        half_diag = 0.5 * float(np.linalg.norm(thr.header.get_zooms()[:3]))
        # within the clot radius (+ voxel half-diagonal + centre-line sampling) of the occluded artery
        assert d.max() <= t["thrombus_radius_mm"] * 1.25 + half_diag + 0.6, (row.subject, d.max())
        # the clot sits on the named artery of the (per-patient) tree: ICA/M1 ... lie in the basal
        # cisterns or sylvian fissure, on the side of the hemisphere
        if t["hemisphere"] in ("L", "R"):
            sign = -1 if t["hemisphere"] == "L" else 1
            assert np.all(np.sign(mni[:, 0]) == sign), row.subject
            assert t["vessel"].endswith("_" + t["hemisphere"])
        else:
            assert t["vessel"] == "BA" and np.all(np.abs(mni[:, 0]) < 8)
        # darker than its surroundings on SWI / T2*
        img = np.asarray(nib.load(root / row[_sus_col(row)]).dataobj, dtype=np.float32)
        m = np.asarray(thr.dataobj) > 0
        st = np.ones((3, 3, 3), bool)
        shell = ndi.binary_dilation(m, st, iterations=3) & ~ndi.binary_dilation(m, st, iterations=1)
        shell &= img > 0.05 * img.max()  # ignore air
        ratio = img[m].mean() / img[shell].mean()
        assert ratio < (0.95 if t["low_contrast"] else 0.8), (row.subject, ratio)


def test_infarct_in_occluded_territory_and_hemisphere(cohort, sheet_df):
    atlas = get_atlas()
    root = cohort.parent
    for _, row in sheet_df.iterrows():
        t = _truth(root, row.subject)
        tf = PatientTransform.from_dict(t["world_to_mni"])
        mni = _mask_mni(nib.load(root / row.infarct_mask), tf)
        lab = atlas.sample("territory", mni, order=0).astype(int)
        assert np.isin(lab, t["territory_codes"]).mean() > 0.9, row.subject
        if t["hemisphere"] == "L":
            assert np.mean(mni[:, 0] < 0) > 0.97
        elif t["hemisphere"] == "R":
            assert np.mean(mni[:, 0] > 0) > 0.97
        # bright on DWI, dark on ADC
        if row.dwi:
            m = np.asarray(nib.load(root / row.infarct_mask).dataobj) > 0
            dwi = np.asarray(nib.load(root / row.dwi).dataobj, np.float32)
            adc = np.asarray(nib.load(root / row.adc).dataobj, np.float32)
            ring = ndi.binary_dilation(m, iterations=3) & ~ndi.binary_dilation(m, iterations=1) & (dwi > 0.3 * dwi[m].mean())
            assert dwi[m].mean() > 1.15 * dwi[ring].mean(), row.subject
            assert np.median(adc[m]) < 0.85 * np.median(adc[ring]), row.subject


def test_skull_outside_true_brain_mask(cohort, sheet_df):
    root = cohort.parent
    for _, row in sheet_df.iterrows():
        img = np.asarray(nib.load(root / row[_sus_col(row)]).dataobj, dtype=np.float32)
        brain = np.asarray(nib.load(root / "derivatives" / "truth" / f"sub-{row.subject}" /
                                    f"sub-{row.subject}_desc-brain_mask.nii.gz").dataobj) > 0
        assert 0.6e6 < brain.sum() * np.prod(nib.load(root / row[_sus_col(row)]).header.get_zooms()) < 2.0e6
        thr = np.percentile(img[brain], 50) * 0.3
        head = ndi.binary_fill_holes(img > thr)
        # a good part of the bright head lies outside the brain: scalp (skull stripping matters)
        assert (head & ~brain).sum() > 0.15 * head.sum(), row.subject


def test_same_seed_same_bytes(tmp_path):
    a = generate_cohort(tmp_path / "a", n_per_center=2, centers=[TINY_CENTER], seed=11, n_jobs=1)
    b = generate_cohort(tmp_path / "b", n_per_center=2, centers=[TINY_CENTER], seed=11, n_jobs=2)
    c = generate_cohort(tmp_path / "c", n_per_center=2, centers=[TINY_CENTER], seed=12, n_jobs=1)

    def digests(sheet: Path) -> dict:
        return {p.relative_to(sheet.parent).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(sheet.parent.rglob("*")) if p.is_file()}

    da, db, dc = digests(a), digests(b), digests(c)
    assert da == db
    assert da.keys() == dc.keys()
    assert da["sub-tiny01/anat/sub-tiny01_swi.nii.gz"] != dc["sub-tiny01/anat/sub-tiny01_swi.nii.gz"]
    # custom centers: spacing, orientation, sequences as configured
    img = nib.load(a.parent / "sub-tiny01" / "anat" / "sub-tiny01_swi.nii.gz")
    assert np.allclose(img.header.get_zooms(), (2.0, 2.0, 3.0))
    assert "".join(nib.aff2axcodes(img.affine)) == "LPS"
    df = pd.read_csv(a, sep="\t", dtype=str, keep_default_na=False)
    assert (df.flair == "").all() and (df.t2star == "").all() and (df.phase != "").all()


def test_transform_roundtrip_and_center_validation():
    rng = np.random.default_rng(0)
    tf = PatientTransform.random(rng)
    pts = rng.uniform(-60, 60, (50, 3))
    assert np.allclose(tf.world_to_mni(tf.mni_to_world(pts)), pts, atol=0.05)
    tf2 = PatientTransform.from_dict(json.loads(json.dumps(tf.to_dict())))
    assert np.allclose(tf2.world_to_mni(pts), tf.world_to_mni(pts), atol=1e-5)
    with pytest.raises(ValueError, match="alphanumeric"):
        validate_centers([{**TINY_CENTER, "name": "ctr-A"}])
    with pytest.raises(ValueError, match="unknown sequence"):
        validate_centers([{**TINY_CENTER, "sequences": {**TINY_CENTER["sequences"], "pd": {}}}])
    with pytest.raises(ValueError, match="susceptibility"):
        validate_centers([{**TINY_CENTER, "susceptibility": "t2star"}])


@pytest.mark.slow
def test_default_demo_cohort(tmp_path):
    """The default demo (4 centers x 8) within 2 minutes on 2 cores, with the configured case mix."""
    t0 = time.perf_counter()
    sheet = generate_cohort(tmp_path, n_per_center=8, seed=0, size="demo", n_jobs=2)
    wall = time.perf_counter() - t0
    df = pd.read_csv(sheet, sep="\t", dtype=str, keep_default_na=False)
    assert len(df) == 32
    truths = [_truth(sheet.parent, s) for s in df.subject]
    sites = pd.Series([t["artery_segment"] for t in truths]).value_counts()
    assert sites["M1"] == 16 and sites.get("M2", 0) + sites.get("ACA", 0) >= 10
    low = sum(t["low_contrast"] for t in truths)
    assert 0.1 <= low / 32 <= 0.2
    assert all(0 <= t["n_microbleeds"] <= 5 for t in truths)
    assert sum(t["infarct_n_pieces"] > 1 for t in truths) >= 5
    assert wall < 120, wall


def test_an_interrupted_run_leaves_the_previous_cohort_whole(tmp_path, monkeypatch):
    """Before: a killed `thrombseg synth` over an existing cohort left a mix of two seeds."""
    out = tmp_path / "cohort"
    sheet = generate_cohort(out, n_per_center=1, centers=[TINY_CENTER], seed=11)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(OutputError, match="--overwrite"):
        generate_cohort(out, n_per_center=1, centers=[TINY_CENTER], seed=12)

    def killed(*a, **k):  # stands for the kill: after every patient of the new seed was written
        raise KeyboardInterrupt

    monkeypatch.setattr(cohort_mod, "write_montage", killed)
    with pytest.raises(KeyboardInterrupt):
        cohort_mod.generate_cohort(out, n_per_center=1, centers=[TINY_CENTER], seed=12, overwrite=True)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort"] and sheet.is_file()


def test_truth_json_rounds_floats_and_nifti_bytes_do_not_depend_on_time(tmp_path, monkeypatch):
    path = write_json({"a": np.float32(0.1234567891), "b": np.arange(2), 3: [1.0000004, np.bool_(True)]},
                      tmp_path / "t.json")
    assert json.loads(path.read_text()) == {"a": 0.123457, "b": [0, 1], "3": [1.0, True]}
    img = make_image(np.arange(24, dtype=np.float32).reshape(2, 3, 4), np.eye(4), "int16")
    first = save_nifti(img, tmp_path / "a.nii.gz").read_bytes()
    monkeypatch.setattr(time, "time", lambda: 1.0e9)  # gzip would stamp the current time otherwise
    assert save_nifti(img, tmp_path / "b.nii.gz").read_bytes() == first
    assert nib.load(tmp_path / "b.nii.gz").get_data_dtype() == np.int16


# ---------------------------------------------------------------------------------------------------
# thrombus-negative patients
def test_no_negatives_leave_the_plan_as_it_was(tmp_path):
    """Share 0 (the default) draws the sites and low-contrast clots of earlier versions."""
    centers = validate_centers(DEFAULT_CENTERS)
    for share in ({}, {"negative_share": 0.0}):
        tasks = cohort_mod.plan_cohort(centers, 8, 0, "demo", tmp_path, **share)
        assert [t.site for t in tasks] == DEMO_PLAN_SITES
        assert [k for k, t in enumerate(tasks) if t.low_contrast] == DEMO_PLAN_LOW_CONTRAST
        assert not any(t.negative_kind for t in tasks)
    assert all(thrombus_presence(n_per_center=8).values())


def test_negatives_planned_in_exact_shares_per_center(tmp_path):
    centers = validate_centers(DEFAULT_CENTERS)
    tasks = cohort_mod.plan_cohort(centers, 8, 0, "demo", tmp_path, negative_share=0.25)
    kinds = [t.negative_kind for t in tasks]
    for c in centers:  # 2 of 8 per center
        assert sum(bool(t.negative_kind) for t in tasks if t.center["name"] == c["name"]) == 2
    counts = pd.Series([k for k in kinds if k]).value_counts()
    assert set(counts.index) == set(NEGATIVE_KINDS) and counts.sum() == 8 and counts.min() >= 2
    for t in tasks:  # a site where a clot is or was; low contrast only for a clot
        assert bool(t.site) == (t.negative_kind in ("", RECANALISED))
        assert not (t.low_contrast and t.negative_kind)
    presence = thrombus_presence(n_per_center=8, negative_share=0.25)
    assert presence == {t.subject: not t.negative_kind for t in tasks}
    # a center's own share wins over the cohort's
    own = [{**centers[0], "negative_share": 0.5}, *centers[1:]]
    tasks = cohort_mod.plan_cohort(validate_centers(own), 8, 0, "demo", tmp_path, negative_share=0.25)
    assert [sum(bool(t.negative_kind) for t in tasks if t.center_index == i) for i in range(4)] == [4, 2, 2, 2]
    with pytest.raises(ValueError, match="negative_share"):
        generate_cohort(tmp_path / "x", n_per_center=1, negative_share=1.5)
    with pytest.raises(ValueError, match="negative_share"):
        validate_centers([{**TINY_CENTER, "negative_share": -0.1}])


def test_a_recanalised_patient_has_normal_flow_and_no_clot():
    """Its clot is placed (its territory infarcts) but not drawn, and no artery is slow."""
    atlas = get_atlas()
    present = draw_pathology(atlas, "M1", Streams.spawn(5, 0, 0))
    gone = draw_pathology(atlas, "M1", Streams.spawn(5, 0, 0), RECANALISED)
    assert present.vessels.clot is not None and (present.vessels.cloud.kind == SLOW).any()
    assert gone.vessels.clot is None and not (gone.vessels.cloud.kind == SLOW).any()
    assert gone.vessels.thrombus.vessel == present.vessels.thrombus.vessel
    assert gone.infarct.territory_codes == present.infarct.territory_codes
    with pytest.raises(ValueError, match="negative_kind"):
        draw_pathology(atlas, "M1", Streams.spawn(5, 0, 0), "healed")
    with pytest.raises(ValueError, match="occlusion site"):
        draw_pathology(atlas, "M1", Streams.spawn(5, 0, 0), "lacunar")


def test_negatives_have_empty_thrombus_masks_and_validate_and_ingest(tmp_path):
    """3 of 4 patients negative, one of each kind: empty thrombus masks, said so in every table."""
    from thrombseg.ingest import ingest_from_sheet
    from thrombseg.sheet import validate_sheet

    sheet = generate_cohort(tmp_path / "c", n_per_center=4, centers=[TINY_CENTER], seed=11, negative_share=0.75)
    root = sheet.parent
    df = pd.read_csv(sheet, sep="\t", dtype=str, keep_default_na=False)
    assert list(df.columns) == SHEET_COLUMNS and (df.thrombus_present == "false").sum() == 3
    parts = pd.read_csv(root / "participants.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert parts.thrombus_present.tolist() == df.thrombus_present.tolist()
    assert sorted(parts.negative_kind) == sorted(["", *NEGATIVE_KINDS])
    atlas = get_atlas()
    for _, row in df.iterrows():
        t = _truth(root, row.subject)
        kind = t["negative_kind"]
        assert t["thrombus_present"] == (row.thrombus_present == "true") == (kind == "")
        thr = np.asarray(nib.load(root / row.thrombus_mask).dataobj)
        inf = nib.load(root / row.infarct_mask)
        inf_ml = float(np.asarray(inf.dataobj).sum() * np.prod(inf.header.get_zooms()) / 1000)
        assert thr.any() == (kind == "") and thr.dtype == np.uint8
        assert (t["thrombus_volume_mm3"] == 0) == (kind != "")
        if kind == "no_stroke":
            assert inf_ml == 0 and t["artery_segment"] is None and t["infarct_n_pieces"] == 0
        elif kind == "lacunar":  # a small deep infarct, no occlusion
            assert 0.05 < inf_ml < 2.0 and t["infarct_n_pieces"] == 1 and t["artery_segment"] is None
            lab = atlas.sample("territory", _mask_mni(inf, PatientTransform.from_dict(t["world_to_mni"])), order=0)
            assert np.isin(lab, [MCA_DEEP, MCA_DEEP + RIGHT_OFFSET]).mean() > 0.8
        elif kind == "recanalised":  # the occlusion's infarct, its clot gone
            assert inf_ml > 1.0 and t["artery_segment"] and not t["hyperintense_vessel_sign"]
        assert not (kind and t["low_contrast"])
    assert (root / "qc" / "montage_tiny.png").is_file()
    # an empty thrombus mask is a valid label: the sheet validates with its images, and it ingests
    validate_sheet(sheet, check_images=True)
    negative = df.loc[df.thrombus_present == "false", "subject"].iloc[0]
    side = ingest_from_sheet(sheet, negative, tmp_path / "ingest")
    assert side["labels"]["thrombus"]["n_voxels"] == 0
    assert not np.asarray(nib.load(tmp_path / "ingest" / f"{negative}_thrombus.nii.gz").dataobj).any()
