"""The cohort contract: every problem of a sheet reported at once; BIDS import."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import write_nifti

from thrombseg.cli import main
from thrombseg.sheet import COLUMNS, SheetError, validate_sheet


def _row(**kw):
    r = {c: "" for c in COLUMNS}
    r.update(kw)
    return r


def _good_case(d, sid):
    img = np.random.default_rng(0).random((8, 8, 6)).astype(np.float32)
    mask = np.zeros((8, 8, 6), np.uint8)
    mask[3:5, 3:5, 2:4] = 1
    write_nifti(d / f"{sid}_swi.nii.gz", img)
    write_nifti(d / f"{sid}_dwi.nii.gz", img[::2, ::2], spacing=(2, 2, 1))
    write_nifti(d / f"{sid}_thr.nii.gz", mask)
    return _row(subject=sid, center="ctrA", swi=f"{sid}_swi.nii.gz", dwi=f"{sid}_dwi.nii.gz",
                thrombus_mask=f"{sid}_thr.nii.gz")


def _write_sheet(path, rows, extra_cols=()):
    df = pd.DataFrame(rows)
    df.to_csv(path, sep="\t", index=False)
    return path


def test_valid_sheet_passes_and_relative_paths_resolve(tmp_path):
    rows = [_good_case(tmp_path, "s1"), _good_case(tmp_path, "s2")]
    sheet = _write_sheet(tmp_path / "subjects.tsv", rows)
    df = validate_sheet(sheet, centers=["ctrA"])
    assert list(df["subject"]) == ["s1", "s2"]
    assert main(["validate", str(sheet)]) == 0


def test_ten_problems_reported_in_one_message(tmp_path):
    d = tmp_path
    rng = np.random.default_rng(1)
    rows = [_good_case(d, "ok1")]
    # 1 missing file
    rows.append(_row(subject="miss", center="ctrA", swi="nowhere_swi.nii.gz"))
    # 2 corrupt NIfTI
    (d / "corrupt.nii.gz").write_bytes(b"this is not a nifti at all")
    rows.append(_row(subject="corr", center="ctrA", swi="corrupt.nii.gz"))
    # 3 4-D image
    write_nifti(d / "fourd.nii.gz", rng.random((6, 6, 4, 3)).astype(np.float32))
    rows.append(_row(subject="four", center="ctrA", dwi="fourd.nii.gz"))
    # 4 NaN voxels
    nan = rng.random((6, 6, 4)).astype(np.float32)
    nan[1, 1, 1] = np.nan
    nan[2, 2, 2] = np.inf
    write_nifti(d / "nan.nii.gz", nan)
    rows.append(_row(subject="nanv", center="ctrA", flair="nan.nii.gz"))
    # 5 mask not binary + 6 mask on another grid than its image
    write_nifti(d / "img.nii.gz", rng.random((6, 6, 4)).astype(np.float32))
    write_nifti(d / "nonbin.nii.gz", rng.integers(0, 3, (6, 6, 4)).astype(np.uint8))
    write_nifti(d / "othergrid.nii.gz", np.zeros((5, 6, 4), np.uint8))
    rows.append(_row(subject="nonb", center="ctrA", swi="img.nii.gz", thrombus_mask="nonbin.nii.gz"))
    rows.append(_row(subject="grid", center="ctrA", dwi="img.nii.gz", infarct_mask="othergrid.nii.gz"))
    # 7 duplicate id
    rows.append(_row(subject="ok1", center="ctrB", swi="img.nii.gz"))
    # 9 a row with no sequence
    rows.append(_row(subject="none", center="ctrA", thrombus_mask="nonbin.nii.gz"))
    df = pd.DataFrame(rows)
    df["dti"] = ""  # 8 unknown sequence column
    sheet = d / "bad.tsv"
    df.to_csv(sheet, sep="\t", index=False)

    with pytest.raises(SheetError) as exc:
        validate_sheet(sheet, centers=["ctrA", "ctrZ"])  # 10 ctrZ has no subjects
    msg = str(exc.value)
    expected = [
        ("column 'dti'", "unknown column"),
        ("line 3 (subject miss), column 'swi'", "file not found"),
        ("line 4 (subject corr), column 'swi'", "unreadable or corrupt NIfTI"),
        ("line 5 (subject four), column 'dwi'", "4-D image of shape (6, 6, 4, 3), 3-D expected"),
        ("line 6 (subject nanv), column 'flair'", "2 NaN/inf voxel(s)"),
        ("line 7 (subject nonb), column 'thrombus_mask'", "mask not binary (values 0, 1, 2)"),
        ("line 8 (subject grid), column 'infarct_mask'", "mask grid (5, 6, 4) differs from the grid (6, 6, 4) of 'dwi'"),
        ("line 9 (subject ok1), column 'subject'", "duplicate subject id (first on line 2)"),
        ("line 10 (subject none)", "no sequence given"),
        ("center 'ctrZ'", "has no subjects"),
    ]
    for where, what in expected:
        hit = [line for line in msg.splitlines() if where in line and what in line]
        assert hit, f"missing problem {where!r}: {what!r} in:\n{msg}"
    assert len(exc.value.problems) >= 10
    assert str(d / "corrupt.nii.gz") in msg  # problems name the file
    # The CLI prints the same message and exits 2 without a traceback.
    assert main(["validate", str(sheet), "--centers", "ctrA", "ctrZ"]) == 2


def test_sheet_with_the_old_and_the_new_infarct_column_is_one_clear_error(tmp_path):
    row = _good_case(tmp_path, "s1") | {"lesion_mask": "s1_thr.nii.gz"}
    sheet = _write_sheet(tmp_path / "subjects.tsv", [row])
    with pytest.raises(SheetError) as err:
        validate_sheet(sheet)
    assert [str(p) for p in err.value.problems] == [
        "line 1, column 'lesion_mask': 'lesion_mask' is the old name of 'infarct_mask', and both columns "
        "are present: keep one"]


def test_row_whose_only_sequence_is_broken_is_unusable(tmp_path):
    (tmp_path / "bad.nii").write_bytes(b"\x00" * 10)
    sheet = _write_sheet(tmp_path / "s.tsv", [_row(subject="a", center="c", swi="bad.nii")])
    with pytest.raises(SheetError, match="no usable sequence"):
        validate_sheet(sheet)


def test_missing_sheet_is_a_clear_error(tmp_path):
    with pytest.raises(SheetError, match="sample sheet not found"):
        validate_sheet(tmp_path / "nope.tsv")


def test_sheet_from_bids(tmp_path):
    bids = tmp_path / "bids"
    img = np.random.default_rng(0).random((4, 4, 4)).astype(np.float32)  # sequences need signal
    mask = np.zeros((4, 4, 4), np.uint8)  # masks may be empty
    write_nifti(bids / "sub-01/anat/sub-01_swi.nii.gz", img)
    write_nifti(bids / "sub-01/anat/sub-01_part-phase_swi.nii.gz", img)
    write_nifti(bids / "sub-01/dwi/sub-01_dwi.nii.gz", img)
    write_nifti(bids / "sub-01/dwi/sub-01_ADC.nii.gz", img)
    write_nifti(bids / "sub-02/anat/sub-02_T2starw.nii.gz", img)
    write_nifti(bids / "sub-02/anat/sub-02_FLAIR.nii.gz", img)
    write_nifti(bids / "sub-02/anat/sub-02_T1w.nii.gz", img)
    write_nifti(bids / "derivatives/labels/sub-01/anat/sub-01_label-thrombus_mask.nii.gz", mask)
    write_nifti(bids / "derivatives/sub-02/ses-1/sub-02_ses-1_msk.nii.gz", mask)
    (bids / "participants.tsv").write_text("participant_id\tsite\nsub-01\tparis\nsub-02\tlyon\n")
    out = tmp_path / "sheet" / "subjects.tsv"
    assert main(["sheet-from-bids", str(bids), "-o", str(out)]) == 0
    df = validate_sheet(out)
    r1, r2 = (df.set_index("subject").loc[s] for s in ("01", "02"))
    assert r1.center == "paris" and r2.center == "lyon"
    assert r1.swi.endswith("sub-01_swi.nii.gz") and r1.phase.endswith("part-phase_swi.nii.gz")
    assert r1.dwi.endswith("_dwi.nii.gz") and r1.adc.endswith("_ADC.nii.gz")
    assert r1.thrombus_mask.endswith("label-thrombus_mask.nii.gz") and r1.t2star == ""
    assert r2.t2star and r2.flair and r2.t1 and r2.infarct_mask.endswith("_msk.nii.gz")
    assert not r1.swi.startswith("/")  # written relative to the sheet


def test_thrombus_presence_column_takes_true_false_or_nothing(tmp_path):
    from thrombseg.core.sequences import PRESENCE_VALUES
    from thrombseg.sheet import load_schema

    assert tuple(load_schema("subjects")["properties"]["thrombus_present"]["enum"]) == PRESENCE_VALUES
    rows = [_good_case(tmp_path, "s1") | {"thrombus_present": "true"}, _good_case(tmp_path, "s2"),
            _good_case(tmp_path, "s3") | {"thrombus_present": "maybe"}]
    with pytest.raises(SheetError) as err:
        validate_sheet(_write_sheet(tmp_path / "subjects.tsv", rows))
    assert len(err.value.problems) == 1 and "'maybe'" in str(err.value) and "thrombus_present" in str(err.value)


def test_thrombus_presence_must_agree_with_the_thrombus_mask(tmp_path):
    """false with a drawn thrombus, or true with an empty mask: one problem each, naming the file."""
    def with_mask(sid, present, empty):
        row = _good_case(tmp_path, sid) | {"thrombus_present": present}
        if empty:
            write_nifti(tmp_path / f"{sid}_thr.nii.gz", np.zeros((8, 8, 6), np.uint8))
        return row

    rows = [with_mask("s1", "false", False), with_mask("s2", "true", True), with_mask("s3", "false", True),
            with_mask("s4", "true", False), with_mask("s5", "", True), with_mask("s6", "", False)]
    sheet = _write_sheet(tmp_path / "subjects.tsv", rows)
    with pytest.raises(SheetError) as err:
        validate_sheet(sheet)
    got = [str(p) for p in err.value.problems]
    assert got == [f"line 2 (subject s1), column 'thrombus_mask', file '{tmp_path / 's1_thr.nii.gz'}': "
                   "thrombus_present is false but the thrombus mask has 8 voxel(s)",
                   f"line 3 (subject s2), column 'thrombus_mask', file '{tmp_path / 's2_thr.nii.gz'}': "
                   "thrombus_present is true but the thrombus mask is empty"], got
    validate_sheet(sheet, check_images=False)  # the voxels are not read at parse time
