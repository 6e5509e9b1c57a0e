"""Bad input gets one clear line naming the file and the problem, never a traceback or a memory bomb."""
from __future__ import annotations

import argparse
import gzip
import time
import tracemalloc

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import write_nifti

from thrombseg.cli import main
from thrombseg.core.errors import positive_int
from thrombseg.ingest import IngestError, ingest_subject
from thrombseg.sheet import COLUMNS, MAX_GZIP_RATIO, SheetError, read_nifti3d, read_sheet, validate_sheet


def _row(**kw):
    r = {c: "" for c in COLUMNS}
    r.update(kw)
    return r


def _sheet(d, *rows):
    path = d / "subjects.tsv"
    pd.DataFrame(list(rows)).to_csv(path, sep="\t", index=False)
    return path


def _claiming(path, shape, dtype=np.float32, body=b"\0" * 64):
    """A NIfTI whose header claims ``shape`` but whose body holds only ``body``."""
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(dtype)
    hdr.set_data_shape(shape)
    hdr["vox_offset"] = 352
    raw = bytes(hdr.binaryblock) + b"\0" * 4 + body
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)
    return path


def _patch_header(path, **fields):
    """Set raw header fields of a written NIfTI, bypassing nibabel's write-time fixes."""
    gz = path.name.endswith(".gz")
    raw = gzip.decompress(path.read_bytes()) if gz else path.read_bytes()
    hdr = nib.Nifti1Header(binaryblock=raw[:348], check=False)
    for k, v in fields.items():
        hdr[k] = v
    raw = bytes(hdr.binaryblock) + raw[348:]
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def _image():
    return np.random.default_rng(0).random((8, 8, 6)).astype(np.float32)


# ------------------------------------------------------------ 1. header sanity before reading voxels
@pytest.mark.parametrize("name", ["sub01_swi.nii.gz", "sub01_swi.nii"])
def test_header_claiming_a_big_volume_fails_fast_without_allocating(tmp_path, capsys, name):
    bomb = _claiming(tmp_path / name, (500, 500, 200))  # 200 MB claimed, a few bytes held
    sheet = _sheet(tmp_path, _row(subject="s1", center="A", swi=name))
    main(["validate", str(sheet)])  # imports done outside the measurement (slow under tracemalloc)
    capsys.readouterr()
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        rc = main(["validate", str(sheet)])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rc == 2
    assert time.perf_counter() - t0 < 2
    assert peak < 20e6, f"peak {peak / 1e6:.0f} MB: voxels were allocated"
    err = capsys.readouterr().err
    assert str(bomb) in err
    assert "header claims 500x500x200 float32 (200.0 MB) but the file holds" in err
    assert "Traceback" not in err


def test_absurd_claim_is_refused_by_name_not_memory_error(tmp_path):
    _claiming(tmp_path / "huge.nii.gz", (32767, 32767, 32767))
    with pytest.raises(ValueError, match=r"header claims 32767x32767x32767 float32 \(140.7 TB\)"):
        read_nifti3d(tmp_path / "huge.nii.gz")


def test_truncated_gzip_body_is_caught_from_the_trailer(tmp_path):
    # random bytes do not compress: the ratio is plausible, but the gzip trailer says 3 MB, not 32 MB
    _claiming(tmp_path / "trunc.nii.gz", (200, 200, 200), body=np.random.default_rng(0).bytes(3_000_000))
    with pytest.raises(ValueError, match=r"32\.0 MB\) but the file holds 3\.0 MB once decompressed"):
        read_nifti3d(tmp_path / "trunc.nii.gz")


def test_zero_dimension_is_refused(tmp_path):
    _claiming(tmp_path / "flat.nii.gz", (0, 10, 10))
    with pytest.raises(ValueError, match="header claims a 0x10x10 image"):
        read_nifti3d(tmp_path / "flat.nii.gz")


def test_empty_mask_at_maximum_compression_still_reads(tmp_path):
    # deflate's best (~1030:1 on zeros) must stay under the ratio refused as impossible
    path = tmp_path / "empty_mask.nii.gz"
    raw = gzip.decompress(write_nifti(tmp_path / "e.nii.gz", np.zeros((256, 256, 128), np.uint8)).read_bytes())
    path.write_bytes(gzip.compress(raw, compresslevel=9))
    assert len(raw) / path.stat().st_size > 1000
    assert len(raw) / path.stat().st_size < MAX_GZIP_RATIO
    _, vol = read_nifti3d(path)
    assert vol.shape == (256, 256, 128) and not vol.any()


def test_size_ceiling_is_configurable(tmp_path, monkeypatch):
    path = write_nifti(tmp_path / "img.nii.gz", _image())
    monkeypatch.setenv("THROMBSEG_MAX_IMAGE_BYTES", "1000")
    with pytest.raises(ValueError, match=r"8x8x6 float32 \(1.5 KB\), over the 1.0 KB limit .*THROMBSEG_MAX_IMAGE_BYTES"):
        read_nifti3d(path)
    monkeypatch.setenv("THROMBSEG_MAX_IMAGE_BYTES", "lots")
    with pytest.raises(ValueError, match="THROMBSEG_MAX_IMAGE_BYTES='lots' is not a positive number of bytes"):
        read_nifti3d(path)
    monkeypatch.setenv("THROMBSEG_MAX_IMAGE_BYTES", "2e3")
    assert read_nifti3d(path)[1].shape == (8, 8, 6)


# ------------------------------------------------------------ 2. zero voxel size
def test_zero_voxel_size_is_an_error_in_validate_and_ingest(tmp_path, capsys):
    path = write_nifti(tmp_path / "s1_swi.nii.gz", _image(), spacing=(2, 2, 2))
    _patch_header(path, pixdim=[1, 0, 2, 2, 0, 0, 0, 0])
    sheet = _sheet(tmp_path, _row(subject="s1", center="A", swi="s1_swi.nii.gz"))
    assert main(["validate", str(sheet)]) == 2
    err = capsys.readouterr().err
    assert f"file '{path}': header voxel size 0 x 2 x 2 mm" in err
    with pytest.raises(IngestError, match=r"s1_swi.nii.gz: header voxel size 0 x 2 x 2 mm"):
        ingest_subject(_row(subject="s1", center="A", swi="s1_swi.nii.gz"), sheet, tmp_path / "out" / "s1")
    _patch_header(path, pixdim=[1, 2, np.nan, 2, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="voxel size 2 x nan x 2 mm"):
        read_nifti3d(path)


# ------------------------------------------------------------ 3. a row with more fields than the header
def test_row_with_more_fields_than_the_header_names_sheet_and_line(tmp_path, capsys):
    write_nifti(tmp_path / "a.nii.gz", _image())
    sheet = tmp_path / "subjects.tsv"
    sheet.write_text("subject\tcenter\tswi\ns1\tA\ta.nii.gz\ns2\tA\ta.nii.gz\tb.nii.gz\n")
    assert main(["validate", str(sheet)]) == 2
    err = capsys.readouterr().err
    assert f"sample sheet {sheet}" in err
    assert "line 3 (subject s2): 4 fields but the header has 3 (extra value(s) 'b.nii.gz'" in err
    # every row too long: pandas used to take column 1 for an index and crash
    sheet.write_text("subject\tcenter\tswi\ns1\tA\ta.nii.gz\tx\n")
    with pytest.raises(SheetError, match="line 2 .*4 fields but the header has 3"):
        read_sheet(sheet)


def test_trailing_empty_fields_are_harmless(tmp_path):
    write_nifti(tmp_path / "a.nii.gz", _image())
    sheet = tmp_path / "subjects.tsv"
    sheet.write_text("subject\tcenter\tswi\ns1\tA\ta.nii.gz\t\ns2\tA\ta.nii.gz\t\t\n")
    df = validate_sheet(sheet)
    assert list(df["subject"]) == ["s1", "s2"] and set(df["swi"]) == {"a.nii.gz"}


# ------------------------------------------------------------ 4. an image with no signal
def test_validate_refuses_sequences_without_signal_but_accepts_empty_masks(tmp_path, capsys):
    write_nifti(tmp_path / "zero.nii.gz", np.zeros((8, 8, 6), np.float32))
    write_nifti(tmp_path / "flat.nii.gz", np.full((8, 8, 6), 7, np.int16))
    write_nifti(tmp_path / "img.nii.gz", _image())
    write_nifti(tmp_path / "empty_mask.nii.gz", np.zeros((8, 8, 6), np.uint8))
    sheet = _sheet(tmp_path,
                   _row(subject="s1", center="A", swi="zero.nii.gz", dwi="img.nii.gz"),
                   _row(subject="s2", center="A", flair="flat.nii.gz"),
                   _row(subject="s3", center="A", swi="img.nii.gz", thrombus_mask="empty_mask.nii.gz"))
    assert main(["validate", str(sheet)]) == 2
    err = capsys.readouterr().err
    assert f"line 2 (subject s1), column 'swi', file '{tmp_path / 'zero.nii.gz'}': image has no signal (every voxel is 0)" in err
    assert "line 3 (subject s2), column 'flair'" in err and "every voxel is 7" in err
    assert "subject s3" not in err  # an empty thrombus mask is valid


# ------------------------------------------------------------ 5. evaluate refuses a probability map
def test_evaluate_refuses_a_non_binary_prediction(tmp_path, capsys):
    truth = np.zeros((8, 8, 6), np.uint8)
    truth[2:4, 2:4, 2:4] = 1
    write_nifti(tmp_path / "truth.nii.gz", truth)
    prob = np.where(truth, 0.9, 0.2).astype(np.float32)
    write_nifti(tmp_path / "p01_thrombus_prob.nii.gz", prob)
    rc = main(["evaluate", str(tmp_path / "p01_thrombus_prob.nii.gz"), str(tmp_path / "truth.nii.gz")])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"{tmp_path / 'p01_thrombus_prob.nii.gz'}: predicted thrombus mask is not binary (values 0.2, 0.9)" in err
    assert len(err.strip().splitlines()) == 1
    # a float 0/1 mask is fine
    write_nifti(tmp_path / "pred.nii.gz", truth.astype(np.float32))
    assert main(["evaluate", str(tmp_path / "pred.nii.gz"), str(tmp_path / "truth.nii.gz")]) == 0
    assert '"dice": 1.0' in capsys.readouterr().out


# ------------------------------------------------------------ 6. --threads below 1
@pytest.mark.parametrize("argv", [
    ["predict", "out", "--swi", "a.nii.gz", "--threads", "0"],
    ["preprocess", "subject", "ing", "s1", "out", "--threads", "-2"],
    ["preprocess", "skullstrip", "a.nii.gz", "b.nii.gz", "--threads", "0"],
])
def test_threads_below_one_is_refused(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        f"error: argument --threads: must be at least 1, got {argv[-1]}")


def test_positive_int():
    assert positive_int("3") == 3
    for bad in ("0", "-1", "x", "1.5"):
        with pytest.raises(argparse.ArgumentTypeError):
            positive_int(bad)
