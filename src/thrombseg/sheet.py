"""The cohort contract: the sample sheet, its validation, and BIDS import.

A sheet is a TSV with one row per patient: ``subject``, ``center``, ``split``, one column per
sequence (any may be empty), the two label columns and an optional ``thrombus_present`` (``false``: a
thrombus-negative patient, whose thrombus mask must be all zeros or absent; ``true``: a non-empty mask, when
given). An empty ``thrombus_present`` is not stated: the splits then count the patient as thrombus-positive
(presence comes from this column, the mask is not read when splitting), while the metrics read presence from
the mask; state ``false`` for every thrombus-negative patient. Relative paths resolve against the sheet's
folder. :func:`validate_sheet` collects *every* problem of a sheet and raises one
:class:`SheetError` listing them all (row, column, file, problem), so a user fixes a sheet in one
round instead of one traceback at a time.

nibabel is imported only where a NIfTI is opened, deliberately: the workflow's DAG parse validates
the sheet's structure without opening an image and should not pay nibabel's second of import.
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd

from .core.io import write_table
from .core.sequences import LABEL_GRID, LABELS, OLD_LABELS, PRESENCE_COLUMN, SEQUENCES

COLUMNS: tuple[str, ...] = ("subject", "center", "split", *SEQUENCES, *LABELS, PRESENCE_COLUMN)

GRID_ATOL_MM = 1e-3  # affine tolerance when comparing a mask's grid to its image's grid

# Header sanity, checked before any voxel is read (a 4 KB file whose header claims a 1000^3 volume
# must not make the reader allocate 4 GB). The ceiling is on the voxel data as stored; a real 3-D
# MRI is well under 1 GB.
MAX_IMAGE_BYTES = 2 * 1024**3
MAX_IMAGE_BYTES_ENV = "THROMBSEG_MAX_IMAGE_BYTES"  # overrides MAX_IMAGE_BYTES (a byte count, e.g. 8e9)
# Deflate never compresses more than ~1032:1, even a volume of zeros (an empty mask gets close), so a
# .nii.gz whose header implies more than this times its file size cannot hold the data it claims.
MAX_GZIP_RATIO = 1100


@dataclass(frozen=True)
class Problem:
    """One problem found in a sheet."""

    line: int | None  # 1-based line in the TSV (header = line 1); None for sheet-level problems
    subject: str | None
    column: str | None
    file: str | None
    message: str

    def __str__(self) -> str:
        where = []
        if self.line is not None:
            where.append(f"line {self.line}" + (f" (subject {self.subject})" if self.subject else ""))
        if self.column:
            where.append(f"column '{self.column}'")
        if self.file:
            where.append(f"file '{self.file}'")
        return (", ".join(where) + ": " if where else "") + self.message


class SheetError(ValueError):
    """A sample sheet with one or more problems; ``problems`` lists them all."""

    def __init__(self, sheet: str | Path, problems: list[Problem]):
        self.sheet = str(sheet)
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"sample sheet {self.sheet}: {len(problems)} problem(s):\n{lines}")


def load_schema(name: str) -> dict:
    """Return a packaged JSON schema (``config`` or ``subjects``)."""
    text = resources.files("thrombseg").joinpath("schemas", f"{name}.schema.json").read_text()
    return json.loads(text)


def read_sheet(path: str | Path) -> pd.DataFrame:
    """Read a sheet as strings (empty cells -> ""), without validating it.

    A column under an earlier version's name (``lesion_mask``) is renamed to today's (``infarct_mask``);
    a sheet with both is a SheetError.
    """
    path = Path(path)
    if not path.is_file():
        raise SheetError(path, [Problem(None, None, None, str(path), "sample sheet not found")])
    width, problems = _extra_fields(path)
    if problems:
        raise SheetError(path, problems)
    try:  # usecols: trailing empty fields (some spreadsheet exports) are dropped, not taken for an index
        df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, comment=None, index_col=False,
                         usecols=range(width) if width else None)
    except Exception as exc:  # pandas raises many types for malformed text
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SheetError(path, [Problem(None, None, None, str(path), f"cannot parse TSV: {msg}")]) from None
    df.columns = [c.strip() for c in df.columns]
    for old, new in OLD_LABELS.items():
        if old in df.columns and new in df.columns:
            raise SheetError(path, [Problem(1, None, old, None,
                                            f"'{old}' is the old name of '{new}', and both columns are present: keep one")])
    df = df.rename(columns=OLD_LABELS)
    return df.apply(lambda col: col.str.strip())


def _extra_fields(path: Path) -> tuple[int, list[Problem]]:
    """The header's number of fields, and the rows with more non-empty fields than it (pandas would
    take the first column for an index, shifting every value one column, or fail)."""
    problems = []
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
        rows = csv.reader(f, delimiter="\t")
        n = len(next(rows, []))
        for fields in rows:
            extra = [v for v in fields[n:] if v.strip()]
            if extra:
                problems.append(Problem(
                    rows.line_num, fields[0].strip() or None, None, None,
                    f"{len(fields)} fields but the header has {n} (extra value(s) {', '.join(map(repr, extra[:3]))}; "
                    "a stray tab?)"))
    return n, problems


def resolve(sheet: str | Path, value: str) -> Path | None:
    """Resolve a sheet cell to a path (relative to the sheet's folder); None when empty."""
    if not value:
        return None
    p = Path(value).expanduser()
    return p if p.is_absolute() else (Path(sheet).resolve().parent / p)


def label_reference(row: dict | pd.Series, label: str) -> str | None:
    """Name of the sequence a label was drawn on for this row, or None when none is present."""
    for seq in LABEL_GRID[label]:
        if row.get(seq, ""):
            return seq
    return None


def human_bytes(n: int) -> str:
    """``4.0 GB``, ``4.1 KB``, ``352 bytes`` (decimal units)."""
    if n < 1000:
        return f"{n} bytes"
    for unit in ("KB", "MB", "GB", "TB", "PB"):
        n /= 1000
        if n < 1000 or unit == "PB":
            return f"{n:.1f} {unit}"
    raise AssertionError("unreachable")


def max_image_bytes() -> int:
    """The image size ceiling: ``$THROMBSEG_MAX_IMAGE_BYTES`` when set, else :data:`MAX_IMAGE_BYTES`."""
    raw = os.environ.get(MAX_IMAGE_BYTES_ENV, "").strip()
    if not raw:
        return MAX_IMAGE_BYTES
    try:
        limit = int(float(raw))
    except ValueError:
        limit = 0
    if limit <= 0:
        raise ValueError(f"{MAX_IMAGE_BYTES_ENV}={raw!r} is not a positive number of bytes")
    return limit


def _raw_nifti_header(path: Path):
    """The NIfTI-1/2 header of a .nii/.nii.gz exactly as stored (nibabel's load-time fixes, such as a
    zero voxel size silently becoming 1 mm, not applied)."""
    import nibabel as nib
    from nibabel.openers import ImageOpener

    try:
        with ImageOpener(str(path), "rb") as f:
            block = f.read(540)
    except Exception as exc:
        raise ValueError(f"unreadable or corrupt NIfTI ({type(exc).__name__}: {exc})") from None
    for klass, size, magic in ((nib.Nifti1Header, 348, b"n+1"), (nib.Nifti2Header, 540, b"n+2")):
        if len(block) >= size and size in (int.from_bytes(block[:4], "little"), int.from_bytes(block[:4], "big")):
            hdr = klass(binaryblock=block[:size], check=False)
            if bytes(hdr["magic"])[:3] != magic:
                raise ValueError(f"unreadable or corrupt NIfTI (magic {bytes(hdr['magic'])!r}, {magic!r} expected)")
            return hdr
    raise ValueError("unreadable or corrupt NIfTI (no NIfTI-1/2 header: file too short or not a NIfTI)")


def _gzip_isize(path: Path) -> int | None:
    """Uncompressed size mod 2**32 from a single-member gzip's trailer; None for a BGZF (blocked,
    multi-member) file, whose trailer only sizes its last block."""
    with open(path, "rb") as f:
        head = f.read(4)
        if len(head) < 4 or head[:2] != b"\x1f\x8b" or head[3] & 0x04:  # FEXTRA: BGZF
            return None
        f.seek(-4, os.SEEK_END)
        return int.from_bytes(f.read(4), "little")


def check_nifti_header(path: str | Path) -> tuple[tuple[int, ...], np.dtype]:
    """Check a NIfTI from its header alone, before any voxel is read.

    Dimensions must be > 0 (at most 7), spatial voxel sizes finite and > 0, and the bytes the
    header implies must fit the file (an uncompressed file at least that large; a gzipped one at
    most :data:`MAX_GZIP_RATIO` times its size and, below 4 GiB, its trailer's size) and the
    ceiling :func:`max_image_bytes`.

    Returns:
        ``(shape, dtype)`` the header claims.

    Raises:
        ValueError: a one-line reason (the caller names the file).
    """
    path = Path(path)
    hdr = _raw_nifti_header(path)
    ndim = int(hdr["dim"][0])
    if not 1 <= ndim <= 7:
        raise ValueError(f"corrupt NIfTI header: dim[0] = {ndim} (the number of dimensions, 1 to 7)")
    shape = tuple(int(d) for d in hdr["dim"][1:ndim + 1])
    claimed = "x".join(map(str, shape))
    if min(shape) <= 0:
        raise ValueError(f"header claims a {claimed} image (a dimension <= 0); refusing to read it")
    zooms = [float(z) for z in hdr["pixdim"][1:1 + min(ndim, 3)]]
    if not all(np.isfinite(z) and z > 0 for z in zooms):
        raise ValueError(f"header voxel size {' x '.join(f'{z:g}' for z in zooms)} mm (pixdim): each must be "
                         "finite and > 0; refusing to guess one")
    try:
        dtype = hdr.get_data_dtype()
    except Exception:
        raise ValueError(f"corrupt NIfTI header: unknown datatype code {int(hdr['datatype'])}") from None
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    implied = max(int(hdr["vox_offset"]), int(hdr["sizeof_hdr"]) + 4) + nbytes
    what = f"header claims {claimed} {dtype.name} ({human_bytes(nbytes)})"
    size = path.stat().st_size
    if path.name.endswith(".gz"):
        isize = _gzip_isize(path) if implied < 2**32 else None
        if implied > size * MAX_GZIP_RATIO:
            raise ValueError(f"{what} but the file holds {human_bytes(size)}; refusing to read it")
        if isize is not None and isize < implied:
            raise ValueError(f"{what} but the file holds {human_bytes(isize)} once decompressed (truncated?); "
                             "refusing to read it")
    elif size < implied:
        raise ValueError(f"{what} but the file holds {human_bytes(size)} (truncated?); refusing to read it")
    limit = max_image_bytes()
    if nbytes > limit:
        raise ValueError(f"{what}, over the {human_bytes(limit)} limit (set {MAX_IMAGE_BYTES_ENV} to raise it); "
                         "refusing to read it")
    return shape, dtype


def _squeezed_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """``shape`` without trailing singleton axes beyond the third."""
    shape = tuple(shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def squeeze3d(data: np.ndarray) -> np.ndarray | None:
    """Return data as 3-D (dropping trailing singleton axes), or None when it is truly >3-D."""
    shape = _squeezed_shape(data.shape)
    return data.reshape(shape) if len(shape) == 3 else None


def read_nifti3d(path: str | Path):
    """``(image, 3-D data)`` of a NIfTI; ValueError with a one-line reason when unreadable or not 3-D.

    The header is checked (:func:`check_nifti_header`) and the shape required to be 3-D before any
    voxel is read.
    """
    import nibabel as nib

    shape, _ = check_nifti_header(path)
    if len(_squeezed_shape(shape)) != 3:
        raise ValueError(f"{len(shape)}-D image of shape {shape}, 3-D expected")
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # library errors as one line
        raise ValueError(f"unreadable or corrupt NIfTI ({type(exc).__name__}: {exc})") from None
    return img, squeeze3d(data)


def nonbinary_values(vol: np.ndarray) -> str | None:
    """None for a mask holding only 0 and 1; else its first distinct values, for a message."""
    vals = np.unique(vol)
    if np.isin(vals, (0, 1)).all():
        return None
    return ", ".join(f"{v:g}" for v in vals[:6]) + (" ..." if len(vals) > 6 else "")


def validate_sheet(
    sheet: str | Path,
    centers: list[str] | None = None,
    check_images: bool = True,
) -> pd.DataFrame:
    """Validate a sample sheet and return it as a DataFrame of strings.

    Args:
        sheet: path of the TSV.
        centers: centers the run is restricted to; each must have at least one subject.
        check_images: also open every NIfTI (corrupt, 4-D, NaN/inf, binary masks, mask grids).
            Without it only structure and file existence are checked (fast, for DAG parsing).

    Raises:
        SheetError: listing every problem found.
    """
    sheet = Path(sheet)
    df = read_sheet(sheet)
    problems = _check_columns(sheet, df)
    validator = jsonschema.Draft202012Validator(load_schema("subjects"))
    seen: dict[str, int] = {}
    for i, row in df.iterrows():
        problems += _check_row(sheet, int(i) + 2, row, validator, seen, check_images)
    if "center" in df.columns:
        problems += _check_centers(df, centers)
    if problems:
        raise SheetError(sheet, problems)
    return df


def _check_columns(sheet: Path, df: pd.DataFrame) -> list[Problem]:
    """Unknown columns; SheetError at once when a required one is missing. Absent optional columns are added empty."""
    problems = [Problem(1, None, c, None, f"unknown column (allowed: {', '.join(COLUMNS)})")
                for c in df.columns if c not in COLUMNS]
    missing = [Problem(1, None, c, None, "required column missing") for c in ("subject", "center")
               if c not in df.columns]
    if missing:
        raise SheetError(sheet, problems + missing)
    for c in COLUMNS:
        if c not in df.columns:
            df[c] = ""
    return problems


def _check_row(sheet: Path, line: int, row: pd.Series, validator, seen: dict[str, int],
               check_images: bool) -> list[Problem]:
    """Every problem of one row: cell values, duplicate id, missing or unusable sequences, files, mask grids."""
    sid = row["subject"] or None
    problems = [Problem(line, sid, err.path[0] if err.path else None, None,
                        f"invalid value {err.instance!r}: {err.message}")
                for err in validator.iter_errors({k: row[k] for k in COLUMNS})]
    if sid:
        if sid in seen:
            problems.append(Problem(line, sid, "subject", None, f"duplicate subject id (first on line {seen[sid]})"))
        else:
            seen[sid] = line
    present = [s for s in SEQUENCES if row[s]]
    if not present:
        problems.append(Problem(line, sid, None, None, "no sequence given: at least one of " + ", ".join(SEQUENCES)))
    usable, grids = [], {}
    for col in (*SEQUENCES, *LABELS):
        path = resolve(sheet, row[col])
        if path is None:
            continue
        message = _file_problem(path)
        grid = None
        if message is None and check_images:
            message, grid = _image_problem(col, path, row[PRESENCE_COLUMN] if col == "thrombus_mask" else "")
        if grid is not None:
            grids[col] = grid
        if message is not None:
            problems.append(Problem(line, sid, col, str(path), message))
        elif col in SEQUENCES:
            usable.append(col)
    if present and not usable:
        problems.append(Problem(line, sid, None, None, "no usable sequence: every sequence file has a problem"))
    return problems + _check_label_grids(sheet, line, sid, row, grids)


def _file_problem(path: Path) -> str | None:
    """Why a sheet's file cannot be used without opening it (missing, not a NIfTI), or None."""
    if not path.is_file():
        return "file not found"
    if not re.search(r"\.nii(\.gz)?$", path.name):
        return "not a NIfTI file (.nii or .nii.gz expected)"
    return None


def _image_problem(col: str, path: Path, presence: str = "") -> tuple[str | None, tuple | None]:
    """(what is wrong with the image or mask, or None; its (shape, affine) grid when it could be read).

    ``presence``: the row's ``thrombus_present`` cell for the thrombus mask, which must agree with it.
    """
    try:
        img, vol = read_nifti3d(path)
    except ValueError as exc:
        return str(exc), None
    if not np.isfinite(img.affine).all() or abs(np.linalg.det(img.affine[:3, :3])) < 1e-9:
        return "invalid affine (singular or non-finite)", None
    if np.issubdtype(vol.dtype, np.floating) and not np.isfinite(vol).all():
        return f"{int((~np.isfinite(vol)).sum())} NaN/inf voxel(s)", None
    grid = (vol.shape, img.affine)
    if col in LABELS:
        shown = nonbinary_values(vol)
        if shown:
            return f"mask not binary (values {shown})", grid
        return _presence_problem(presence, int(np.count_nonzero(vol))), grid
    if vol.min() == vol.max():  # predict would refuse it; an empty mask, though, is valid
        return f"image has no signal (every voxel is {vol.flat[0]:g})", grid
    return None, grid


def _presence_problem(presence: str, n_voxels: int) -> str | None:
    """Why a thrombus mask of ``n_voxels`` contradicts the ``thrombus_present`` cell, or None."""
    if presence == "false" and n_voxels:
        return f"{PRESENCE_COLUMN} is false but the thrombus mask has {n_voxels} voxel(s)"
    if presence == "true" and not n_voxels:
        return f"{PRESENCE_COLUMN} is true but the thrombus mask is empty"
    return None


def _check_label_grids(sheet: Path, line: int, sid: str | None, row: pd.Series, grids: dict) -> list[Problem]:
    """Each mask must share the grid of the image it was drawn on."""
    problems = []
    for label in LABELS:
        ref = label_reference(row, label)
        if label not in grids or ref is None or ref not in grids:
            continue
        (lshape, laff), (rshape, raff) = grids[label], grids[ref]
        if lshape != rshape or not np.allclose(laff, raff, atol=GRID_ATOL_MM):
            problems.append(Problem(
                line, sid, label, str(resolve(sheet, row[label])),
                f"mask grid {lshape} differs from the grid {rshape} of '{ref}' it is drawn on"
                + ("" if lshape != rshape else " (affines differ)"),
            ))
    return problems


def _check_centers(df: pd.DataFrame, centers: list[str] | None) -> list[Problem]:
    """Each requested center must have a subject, and the sheet a row."""
    problems = []
    have = set(df["center"])
    for c in centers or ():
        if c not in have:
            problems.append(Problem(None, None, "center", None, f"center '{c}' requested but has no subjects in the sheet"))
    if not len(df):
        problems.append(Problem(None, None, None, None, "sheet has no rows"))
    return problems


# ---------------------------------------------------------------- BIDS import
_BIDS_SUFFIX = [  # (regex on the file name, column); first match wins
    (r"_part-phase(_.*)?_swi\.nii(\.gz)?$", "phase"),
    (r"_part-mag(_.*)?_swi\.nii(\.gz)?$", "swi"),
    (r"_phase\.nii(\.gz)?$", "phase"),
    (r"_swi\.nii(\.gz)?$", "swi"),
    (r"_T2starw\.nii(\.gz)?$", "t2star"),
    (r"_dwi\.nii(\.gz)?$", "dwi"),
    (r"_(adc|ADC)\.nii(\.gz)?$", "adc"),
    (r"_FLAIR\.nii(\.gz)?$", "flair"),
    (r"_T1w\.nii(\.gz)?$", "t1"),
]
_BIDS_LABEL = [
    (r"_label-(thrombus|clot)(_.*)?_(mask|dseg)\.nii(\.gz)?$", "thrombus_mask"),
    (r"_label-(infarct|lesion|stroke)(_.*)?_(mask|dseg)\.nii(\.gz)?$", "infarct_mask"),
    (r"_msk\.nii(\.gz)?$", "infarct_mask"),  # ISLES'22 derivatives naming
]


def sheet_from_bids(bids_dir: str | Path, out: str | Path | None = None) -> pd.DataFrame:
    """Build a sample sheet from a BIDS tree.

    Sequences come from ``sub-*/[ses-*/]{anat,dwi}`` by suffix (swi, part-phase swi, T2starw, dwi,
    ADC/adc, FLAIR, T1w); labels from ``derivatives/`` (``label-thrombus``/``label-infarct`` masks,
    or ISLES'22-style ``_msk``); the center from the ``center`` or ``site`` column of
    participants.tsv. The first session of a subject is used. Paths are written relative to the
    sheet's folder when ``out`` is given.
    """
    bids = Path(bids_dir).resolve()
    if not bids.is_dir():
        raise SheetError(bids, [Problem(None, None, None, str(bids), "BIDS folder not found")])
    centers: dict[str, str] = {}
    ptsv = bids / "participants.tsv"
    if ptsv.is_file():
        p = pd.read_csv(ptsv, sep="\t", dtype=str, keep_default_na=False)
        col = next((c for c in ("center", "site") if c in p.columns), None)
        if col:
            centers = {r["participant_id"].removeprefix("sub-"): r[col] for _, r in p.iterrows()}

    def match(name: str, table) -> str | None:
        return next((col for rx, col in table if re.search(rx, name)), None)

    rows = []
    for sub in sorted(d for d in bids.glob("sub-*") if d.is_dir()):
        sid = sub.name.removeprefix("sub-")
        row = {c: "" for c in COLUMNS}
        row.update(subject=sid, center=centers.get(sid, "unknown"))
        for f in sorted(sub.rglob("*.nii*")):
            col = match(f.name, _BIDS_SUFFIX)
            if col and not row[col]:
                row[col] = str(f)
        deriv = bids / "derivatives"
        if deriv.is_dir():
            for f in sorted(deriv.rglob(f"sub-{sid}_*.nii*")):
                col = match(f.name, _BIDS_LABEL)
                if col and not row[col]:
                    row[col] = str(f)
        rows.append(row)
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    if out is not None:
        out = Path(out).resolve()
        base = out.parent
        for col in (*SEQUENCES, *LABELS):
            df[col] = [_relpath(v, base) for v in df[col]]
        write_table(df, out, sep="\t")
    return df


def _relpath(value: str, base: Path) -> str:
    return os.path.relpath(value, base) if value else ""
