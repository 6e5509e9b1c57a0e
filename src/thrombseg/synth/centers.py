"""Center protocols of the synthetic cohort and the acquisition grids they produce.

A center is a plain dict (JSON/YAML friendly)::

    {"name": "ctrA",                     # alphanumeric, prefix of subject ids (ctrA01, ...)
     "field_strength": 3.0,              # tesla: contrast, blooming, phase scale
     "manufacturer": "VendorS",
     "susceptibility": "swi",            # swi | t2star: which susceptibility image it has
     "sequences": {                      # only the sequences the center acquires
        "swi":   {"spacing": [0.5, 0.5, 2.0],        # paper size, voxel size in array axis order
                  "demo_spacing": [1.0, 1.0, 2.0],   # demo size (default: spacing)
                  "orientation": "RAS",              # axis codes of the voxel array (3 letters)
                  "fov_mm": [200, 236, 136],         # field of view along R, A, S (world) axes
                  "z_center_mni": 8.0,               # slab centre (MNI z) the technologist aims at
                  "echo_time_ms": 20.0,
                  "oblique_deg": 0.0},               # optional, default: center "obliquity_deg"
        "phase": {"kind": "raw" | "filtered", "storage": "int" | "radians"},   # on the swi/t2star grid
        "dwi":   {... like swi ...},
        "adc":   {"scale": 1e6, "dtype": "float32"},  # stored = ADC[mm^2/s] * scale; on the dwi grid
        "flair": {... like swi ...},
        "t1w":   {... like swi ...}},        # optional (none of the default centers has one)
     "obliquity_deg": 0.0,               # tilt of axial slabs about the R-L axis
     "adc_raw": False,                   # ADC as raw 12-bit integers 0..4095 (uint16, 1e-6 mm^2/s)
     "adc_background": "noise" | "zero",
     "missing": {"dwi": 0.0, "phase": 0.0, "flair": 0.0},   # per-patient probability of a lost series
     "noise": 0.025,                     # Rician sigma relative to white-matter signal
     "bias": 0.2,                        # bias-field strength (log amplitude)
     "intensity_scale": 1000.0,          # overall stored intensity scale (x0.5..1 = white matter),
                                         # jittered per patient (log-normal, sd 0.15)
     "dtype": "int16",                   # storage of magnitude images: int16 | float32
     "negative_share": 0.25}             # optional: share of its patients without a thrombus
                                         # (default: generate_cohort's negative_share)
"""
from __future__ import annotations

import copy
import re

import numpy as np

from ..core.sequences import SEQUENCES, sources
from .transform import rotation

# Center configs name the T1 series by its BIDS suffix; every other key is the sample-sheet column.
CONFIG_KEY = {seq: "t1w" if seq == "t1" else seq for seq in SEQUENCES}  # sheet column -> config key
SHEET_COLUMN = {key: seq for seq, key in CONFIG_KEY.items()}
SUSCEPTIBILITY = sources("swi")  # a center has exactly one of SWI and T2*-GRE
# the susceptibility family first: it is generated first and leads the QC montage
SEQUENCE_KEYS = tuple(CONFIG_KEY[s] for s in (*SUSCEPTIBILITY, *(s for s in SEQUENCES if s not in SUSCEPTIBILITY)))
GRID_SEQUENCES = ("swi", "t2star", "dwi", "flair", "t1w")  # sequences that define their own grid

DEFAULT_CENTERS: list[dict] = [
    {   # complete 3 T center
        "name": "ctrA", "field_strength": 3.0, "manufacturer": "VendorS", "susceptibility": "swi",
        "sequences": {
            "swi": {"spacing": [0.5, 0.5, 2.0], "demo_spacing": [1.0, 1.0, 2.0], "orientation": "RAS",
                    "fov_mm": [192, 228, 136], "z_center_mni": 8.0, "echo_time_ms": 20.0},
            "phase": {"kind": "raw", "storage": "int"},
            "dwi": {"spacing": [1.0, 1.0, 5.0], "demo_spacing": [1.25, 1.25, 5.0], "orientation": "RAS",
                    "fov_mm": [220, 240, 150], "z_center_mni": 10.0},
            "adc": {"scale": 1e6, "dtype": "float32"},
            "flair": {"spacing": [0.7, 0.7, 5.0], "demo_spacing": [1.0, 1.0, 5.0], "orientation": "RAS",
                      "fov_mm": [200, 236, 150], "z_center_mni": 10.0},
        },
        "obliquity_deg": 0.0, "adc_raw": False, "adc_background": "noise", "missing": {},
        "noise": 0.02, "bias": 0.25, "intensity_scale": 1000.0, "dtype": "int16",
    },
    {   # 1.5 T center with T2*-GRE instead of SWI, LPS storage, float images
        "name": "ctrB", "field_strength": 1.5, "manufacturer": "VendorP", "susceptibility": "t2star",
        "sequences": {
            "t2star": {"spacing": [0.9, 0.9, 5.0], "demo_spacing": [1.0, 1.0, 5.0], "orientation": "LPS",
                       "fov_mm": [200, 236, 150], "z_center_mni": 10.0, "echo_time_ms": 25.0},
            "dwi": {"spacing": [1.8, 1.8, 5.0], "orientation": "LPS", "fov_mm": [230, 230, 150],
                    "z_center_mni": 10.0},
            "adc": {"scale": 1e3, "dtype": "float32"},
            "flair": {"spacing": [0.9, 0.9, 6.0], "demo_spacing": [1.0, 1.0, 6.0], "orientation": "LPS",
                      "fov_mm": [200, 236, 150], "z_center_mni": 10.0},
        },
        "obliquity_deg": 0.0, "adc_raw": False, "adc_background": "zero", "missing": {},
        "noise": 0.04, "bias": 0.12, "intensity_scale": 1.0, "dtype": "float32",
    },
    {   # 3 T center: SWI stored slice-axis-first, ADC raw 0..4095, isotropic 2 mm DWI, no FLAIR
        "name": "ctrC", "field_strength": 3.0, "manufacturer": "VendorG", "susceptibility": "swi",
        "sequences": {
            "swi": {"spacing": [2.0, 0.45, 0.45], "demo_spacing": [2.0, 1.1, 1.1], "orientation": "SLP",
                    "fov_mm": [190, 230, 128], "z_center_mni": 10.0, "echo_time_ms": 24.0},
            "phase": {"kind": "filtered", "storage": "radians"},
            "dwi": {"spacing": [2.0, 2.0, 2.0], "orientation": "LAS", "fov_mm": [220, 220, 150],
                    "z_center_mni": 10.0},
            "adc": {"scale": 1e6, "dtype": "uint16"},
        },
        "obliquity_deg": 0.0, "adc_raw": True, "adc_background": "noise", "missing": {},
        "noise": 0.03, "bias": 0.3, "intensity_scale": 2500.0, "dtype": "int16",
    },
    {   # 3 T center, oblique (15 deg) axial slabs, thick DWI, sagittal 3-D FLAIR, lost series
        "name": "ctrD", "field_strength": 3.0, "manufacturer": "VendorS", "susceptibility": "swi",
        "sequences": {
            "swi": {"spacing": [0.6, 0.6, 2.0], "demo_spacing": [1.2, 1.2, 2.0], "orientation": "LPS",
                    "fov_mm": [200, 230, 130], "z_center_mni": 10.0, "echo_time_ms": 20.0},
            "phase": {"kind": "raw", "storage": "radians"},
            "dwi": {"spacing": [1.2, 1.2, 6.5], "demo_spacing": [1.6, 1.6, 6.5], "orientation": "LPS",
                    "fov_mm": [230, 230, 150], "z_center_mni": 10.0},
            "adc": {"scale": 1e6, "dtype": "int16"},
            "flair": {"spacing": [1.0, 1.0, 1.0], "demo_spacing": [1.5, 1.5, 1.5], "orientation": "ASR",
                      "fov_mm": [180, 236, 190], "z_center_mni": 12.0, "oblique_deg": 0.0},
        },
        "obliquity_deg": 15.0, "adc_raw": False, "adc_background": "noise",
        "missing": {"dwi": 0.1, "phase": 0.1},
        "noise": 0.03, "bias": 0.3, "intensity_scale": 400.0, "dtype": "int16",
    },
]

_AXES = {"R": (0, 1.0), "L": (0, -1.0), "A": (1, 1.0), "P": (1, -1.0), "S": (2, 1.0), "I": (2, -1.0)}


def validate_centers(centers: list[dict]) -> list[dict]:
    """Check and normalise a list of center dicts (returns deep copies with defaults filled in)."""
    if not centers:
        raise ValueError("at least one center is needed")
    out, names = [], set()
    for c in centers:
        c = copy.deepcopy(c)
        name = c.get("name", "")
        if not re.fullmatch(r"[A-Za-z0-9]+", str(name)):
            raise ValueError(f"center name {name!r} must be alphanumeric (BIDS-safe)")
        if name in names:
            raise ValueError(f"duplicate center name {name!r}")
        names.add(name)
        seqs = c.get("sequences") or {}
        _check_sequences(c, name, seqs)
        for s in GRID_SEQUENCES:
            if s in seqs:
                _normalise_grid(name, s, seqs[s])
        _fill_series_defaults(c, seqs)
        _fill_center_defaults(c, name)
        out.append(c)
    return out


def _check_sequences(c: dict, name: str, seqs: dict) -> None:
    """Known sequence keys, exactly one susceptibility image, ADC only with DWI."""
    unknown = set(seqs) - set(SEQUENCE_KEYS)
    if unknown:
        raise ValueError(f"center {name}: unknown sequence(s) {sorted(unknown)}; known: {SEQUENCE_KEYS}")
    kind = c.setdefault("susceptibility", "swi" if "swi" in seqs else "t2star")
    if kind not in SUSCEPTIBILITY:
        raise ValueError(f"center {name}: susceptibility must be 'swi' or 't2star'")
    if kind not in seqs:
        raise ValueError(f"center {name}: susceptibility image '{kind}' missing from its sequences")
    if all(s in seqs for s in SUSCEPTIBILITY):
        raise ValueError(f"center {name}: give either swi or t2star, not both")
    if "adc" in seqs and "dwi" not in seqs:
        raise ValueError(f"center {name}: adc needs dwi")


def _normalise_grid(name: str, seq: str, q: dict) -> None:
    """Check a grid-defining sequence's orientation and spacing; fill its grid defaults in place."""
    orient = str(q.get("orientation", "RAS")).upper()
    if len(orient) != 3 or sorted(_AXES[a][0] for a in orient if a in _AXES) != [0, 1, 2]:
        raise ValueError(f"center {name}: bad orientation {orient!r} for {seq}")
    q["orientation"] = orient
    if len(q.get("spacing", ())) != 3:
        raise ValueError(f"center {name}: {seq} needs a 3-value spacing")
    q.setdefault("demo_spacing", q["spacing"])
    q.setdefault("fov_mm", [200, 236, 150])
    q.setdefault("z_center_mni", 10.0)


def _fill_series_defaults(c: dict, seqs: dict) -> None:
    """Phase kind/storage and ADC scale/dtype defaults (raw 12-bit ADC forces uint16, 1e-6 mm^2/s)."""
    if "phase" in seqs:
        seqs["phase"] = {"kind": "raw", "storage": "int", **(seqs["phase"] or {})}
    if "adc" in seqs:
        a = {"scale": 1e6, "dtype": "float32", **(seqs["adc"] or {})}
        if c.get("adc_raw"):
            a.update(scale=1e6, dtype="uint16")
        seqs["adc"] = a


def _fill_center_defaults(c: dict, name: str) -> None:
    """Scanner, noise and storage defaults of a center, in place; checks the magnitude dtype."""
    c.setdefault("field_strength", 3.0)
    c.setdefault("manufacturer", "Synthetic")
    c.setdefault("obliquity_deg", 0.0)
    c.setdefault("adc_raw", False)
    c.setdefault("adc_background", "noise")
    c["missing"] = {k: float(v) for k, v in (c.get("missing") or {}).items()}
    c.setdefault("noise", 0.03)
    c.setdefault("bias", 0.2)
    c.setdefault("intensity_scale", 1000.0)
    c.setdefault("dtype", "int16")
    if c["dtype"] not in ("int16", "float32"):
        raise ValueError(f"center {name}: dtype must be int16 or float32")
    if "negative_share" in c:  # not filled in when absent: the cohort's share applies
        c["negative_share"] = float(c["negative_share"])
        if not 0.0 <= c["negative_share"] <= 1.0:
            raise ValueError(f"center {name}: negative_share must be in [0, 1]")


def sequence_spacing(center: dict, seq: str, size: str) -> tuple[float, float, float]:
    """Voxel size (array axis order) of a grid-defining sequence at a cohort size (demo | paper)."""
    q = center["sequences"][seq]
    sp = q["spacing"] if size == "paper" else q.get("demo_spacing", q["spacing"])
    return tuple(float(v) for v in sp)


def acquisition_grid(center: dict, seq: str, size: str, head_centre_world: np.ndarray,
                     rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Voxel->world affine and shape of one acquisition.

    The slab is centred on ``head_centre_world`` (where the technologist aims), sized from the
    protocol's field of view with a few percent of per-patient jitter, and tilted about the R-L axis
    by the sequence's obliquity.
    """
    q = center["sequences"][seq]
    spacing = np.array(sequence_spacing(center, seq, size))
    orient = q["orientation"]
    D = np.zeros((3, 3))
    world_axis = []
    for i, a in enumerate(orient):
        ax, sgn = _AXES[a]
        D[ax, i] = sgn
        world_axis.append(ax)
    fov = np.asarray(q["fov_mm"], float)
    shape = []
    for i in range(3):
        f = fov[world_axis[i]]
        is_slice = spacing[i] >= 1.5 * min(spacing)
        jit = rng.uniform(0.97, 1.05) if not is_slice else rng.uniform(0.94, 1.06)
        shape.append(max(1, int(round(f * jit / spacing[i]))))
    obl = float(q.get("oblique_deg", center.get("obliquity_deg", 0.0)))
    R = rotation(np.deg2rad(obl), 0.0, 0.0)
    lin = R @ D @ np.diag(spacing)
    aff = np.eye(4)
    aff[:3, :3] = lin
    aff[:3, 3] = np.asarray(head_centre_world, float) - lin @ ((np.array(shape) - 1) / 2.0)
    return aff, tuple(shape)
