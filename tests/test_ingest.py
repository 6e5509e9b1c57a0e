"""Ingest: canonical RAS float32, identifiers stripped, sidecar, atomic outputs."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import write_nifti

from thrombseg.cli import main
from thrombseg.ingest import IngestError, ingest_subject
from thrombseg.sheet import COLUMNS, validate_sheet


def _row(**kw):
    r = {c: "" for c in COLUMNS}
    r.update(kw)
    return r


def test_lps_image_becomes_ras_and_identifiers_are_dropped(tmp_path):
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    lps = np.diag([-0.5, -0.5, 2.0, 1.0])  # LPS, anisotropic, as many scanners write
    img = nib.Nifti1Image(data, lps)
    img.header["descrip"] = b"DOE^JOHN 1950-01-01"
    img.header["db_name"] = b"PATIENT123"
    img.header["aux_file"] = b"MRN-42"
    nib.save(img, tmp_path / "swi.nii.gz")
    mask = np.zeros_like(data, dtype=np.uint8)
    mask[1, 2, 3] = 1
    write_nifti(tmp_path / "thr.nii.gz", mask, affine=lps)

    side = ingest_subject(_row(subject="p1", center="c", swi="swi.nii.gz", thrombus_mask="thr.nii.gz"),
                          tmp_path / "sheet.tsv", tmp_path / "out" / "p1")
    out = nib.load(tmp_path / "out" / "p1" / "p1_swi.nii.gz")
    assert nib.aff2axcodes(out.affine) == ("R", "A", "S")
    assert out.get_data_dtype() == np.float32
    raw = bytes(out.header.binaryblock)
    for ident in (b"DOE^JOHN", b"PATIENT123", b"MRN-42"):
        assert ident not in raw
    # Same world position of every voxel: the flipped array times the new affine = the old world.
    ijk_old = np.array([1, 2, 3, 1.0])
    world = lps @ ijk_old
    ijk_new = np.linalg.solve(out.affine, world)
    assert np.asarray(out.dataobj)[tuple(np.round(ijk_new[:3]).astype(int))] == data[1, 2, 3]
    thr = nib.load(tmp_path / "out" / "p1" / "p1_thrombus.nii.gz")
    assert np.array_equal(thr.affine, out.affine) and np.asarray(thr.dataobj).sum() == 1
    assert side["sequences"]["swi"]["orientation_original"] == "LPS"
    assert side["sequences"]["swi"]["spacing_mm"] == [0.5, 0.5, 2.0]
    assert side["labels"]["thrombus"]["drawn_on"] == "swi"
    on_disk = json.loads((tmp_path / "out" / "p1" / "p1_ingest.json").read_text())
    assert on_disk["subject"] == "p1"


def test_failure_leaves_no_partial_output(tmp_path):
    write_nifti(tmp_path / "ok.nii.gz", np.ones((4, 4, 4), np.float32))
    (tmp_path / "bad.nii.gz").write_bytes(b"garbage")
    with pytest.raises(IngestError, match="bad.nii.gz: unreadable or corrupt NIfTI"):
        ingest_subject(_row(subject="p2", center="c", swi="ok.nii.gz", flair="bad.nii.gz"),
                       tmp_path / "sheet.tsv", tmp_path / "out" / "p2")
    assert not (tmp_path / "out" / "p2").exists()
    assert list((tmp_path / "out").iterdir()) == []  # temp folder cleaned too


def test_sheet_of_an_earlier_version_validates_and_ingests(tmp_path):
    """The infarct column under its old name ``lesion_mask`` is read as ``infarct_mask``."""
    img = np.random.default_rng(0).random((8, 8, 6)).astype(np.float32)
    mask = np.zeros((8, 8, 6), np.uint8)
    mask[3:5, 3:5, 2:4] = 1
    write_nifti(tmp_path / "dwi.nii.gz", img)
    write_nifti(tmp_path / "inf.nii.gz", mask)
    row = {c: "" for c in COLUMNS if c != "infarct_mask"} | {"subject": "p1", "center": "c", "dwi": "dwi.nii.gz",
                                                          "lesion_mask": "inf.nii.gz"}
    sheet = tmp_path / "subjects.tsv"
    pd.DataFrame([row]).to_csv(sheet, sep="\t", index=False)
    df = validate_sheet(sheet)
    assert "lesion_mask" not in df.columns and list(df["infarct_mask"]) == ["inf.nii.gz"]
    assert main(["validate", str(sheet)]) == 0
    assert main(["ingest", str(sheet), "p1", str(tmp_path / "p1")]) == 0
    side = json.loads((tmp_path / "p1" / "p1_ingest.json").read_text())
    assert side["labels"]["infarct"]["drawn_on"] == "dwi"
    assert np.asarray(nib.load(tmp_path / "p1" / "p1_infarct.nii.gz").dataobj).sum() == mask.sum()


def test_an_all_zero_thrombus_mask_validates_and_ingests(tmp_path):
    """A thrombus-negative patient: its empty thrombus mask is a valid label, not a broken file."""
    write_nifti(tmp_path / "swi.nii.gz", np.random.default_rng(0).random((8, 8, 6)).astype(np.float32))
    write_nifti(tmp_path / "thr.nii.gz", np.zeros((8, 8, 6), np.uint8))
    sheet = tmp_path / "subjects.tsv"
    pd.DataFrame([_row(subject="p1", center="c", swi="swi.nii.gz", thrombus_mask="thr.nii.gz",
                       thrombus_present="false")]).to_csv(sheet, sep="\t", index=False)
    assert validate_sheet(sheet, check_images=True)["thrombus_present"].tolist() == ["false"]
    assert main(["ingest", str(sheet), "p1", str(tmp_path / "p1")]) == 0
    side = json.loads((tmp_path / "p1" / "p1_ingest.json").read_text())
    assert side["labels"]["thrombus"]["n_voxels"] == 0 and side["labels"]["thrombus"]["volume_mm3"] == 0
    out = nib.load(tmp_path / "p1" / "p1_thrombus.nii.gz")
    assert out.shape == (8, 8, 6) and not np.asarray(out.dataobj).any()


def test_real_isles22_case_via_cli(tmp_path, real_data):
    case = real_data / "isles22" / "sub-strokecase0001"
    sheet = tmp_path / "subjects.tsv"
    pd.DataFrame([_row(subject="isles1", center="isles", dwi=str(case / "sub-strokecase0001_ses-0001_dwi.nii.gz"),
                       adc=str(case / "sub-strokecase0001_ses-0001_adc.nii.gz"),
                       infarct_mask=str(case / "sub-strokecase0001_ses-0001_msk.nii.gz"))]).to_csv(sheet, sep="\t", index=False)
    assert main(["validate", str(sheet)]) == 0
    assert main(["ingest", str(sheet), "isles1", str(tmp_path / "isles1")]) == 0
    side = json.loads((tmp_path / "isles1" / "isles1_ingest.json").read_text())
    assert set(side["sequences"]) == {"dwi", "adc"}
    les = side["labels"]["infarct"]
    assert les["drawn_on"] == "dwi" and abs(les["volume_mm3"] / 1000 - 6.7) < 0.3  # README: 6.7 mL


def _sheet(folder, subject="p1"):
    """A one-row sheet with an SWI beside it, in ``folder``."""
    write_nifti(folder / "swi.nii.gz", np.random.default_rng(0).random((6, 6, 6)).astype(np.float32))
    sheet = folder / "sheet.tsv"
    pd.DataFrame([_row(subject=subject, center="c", swi="swi.nii.gz")]).to_csv(sheet, sep="\t", index=False)
    return sheet


@pytest.mark.parametrize("where", ["cwd", "sheet_folder", "notes"])
def test_ingest_never_deletes_a_users_folder(tmp_path, monkeypatch, capsys, where):
    """Before: OUT=. emptied the working folder; OUT=the sheet's folder deleted the sheet and images."""
    data = tmp_path / "data"
    data.mkdir()
    sheet = _sheet(data)
    (data / "notes.txt").write_text("mine")
    monkeypatch.chdir(data)
    out = {"cwd": ".", "sheet_folder": str(data), "notes": str(data)}[where]
    if where == "notes":  # a folder of the user's that holds no input
        out = str(tmp_path / "notes")
        (tmp_path / "notes").mkdir()
        (tmp_path / "notes" / "n.txt").write_text("mine")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert main(["ingest", str(sheet), "p1", out]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and ("refusing to write there" in err or "not written by thrombseg" in err)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    assert main(["ingest", str(sheet), "p1", out, "--overwrite"]) == 2  # --overwrite never helps here
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_ingest_refuses_a_subject_id_that_leaves_the_folder(tmp_path, capsys):
    """Before: a sheet row with subject ../../etc wrote files outside the output folder (exit 0)."""
    sheet = _sheet(tmp_path, subject="../../etc")
    with pytest.raises(ValueError, match="not allowed in file names"):
        ingest_subject(_row(subject="../../etc", swi="swi.nii.gz"), sheet, tmp_path / "out" / "x")
    assert main(["ingest", str(sheet), "../../etc", str(tmp_path / "out" / "x")]) == 2
    assert "not allowed in file names" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path.parent / "etc").exists()


def test_ingest_rerun_needs_overwrite_and_replaces_only_its_output(tmp_path, capsys):
    sheet = _sheet(tmp_path)
    out = tmp_path / "out"
    assert main(["ingest", str(sheet), "p1", str(out)]) == 0
    assert main(["ingest", str(sheet), "p1", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["ingest", str(sheet), "p1", str(out), "--overwrite"]) == 0
    (out / "annotation.nii.gz").write_text("user")
    assert main(["ingest", str(sheet), "p1", str(out), "--overwrite"]) == 2
    assert "annotation.nii.gz" in capsys.readouterr().err and (out / "annotation.nii.gz").is_file()


def test_a_negative_without_a_thrombus_mask_gets_an_all_zero_one(tmp_path):
    """thrombus_present false and no mask: ingest writes an all-zero mask on the SWI grid (recorded in
    the sidecar), so the patient is scored as a negative instead of skipped as unlabelled."""
    lps = np.diag([-0.5, -0.5, 2.0, 1.0])
    write_nifti(tmp_path / "swi.nii.gz", np.random.default_rng(0).random((8, 7, 6)).astype(np.float32), affine=lps)
    sheet = tmp_path / "subjects.tsv"
    rows = [_row(subject="p1", center="c", swi="swi.nii.gz", thrombus_present="false"),
            _row(subject="p2", center="c", swi="swi.nii.gz")]
    pd.DataFrame(rows).to_csv(sheet, sep="\t", index=False)
    validate_sheet(sheet, check_images=True)
    assert main(["ingest", str(sheet), "p1", str(tmp_path / "p1")]) == 0
    side = json.loads((tmp_path / "p1" / "p1_ingest.json").read_text())
    label = side["labels"]["thrombus"]
    assert label["n_voxels"] == 0 and label["drawn_on"] == "swi" and label["source"] is None
    assert "thrombus_present is false" in label["written_as"]
    out, swi = nib.load(tmp_path / "p1" / "p1_thrombus.nii.gz"), nib.load(tmp_path / "p1" / "p1_swi.nii.gz")
    assert out.shape == swi.shape and np.allclose(out.affine, swi.affine) and not np.asarray(out.dataobj).any()
    # presence not stated: no mask is made up
    assert main(["ingest", str(sheet), "p2", str(tmp_path / "p2")]) == 0
    assert not (tmp_path / "p2" / "p2_thrombus.nii.gz").exists()
    assert json.loads((tmp_path / "p2" / "p2_ingest.json").read_text())["labels"] == {}
