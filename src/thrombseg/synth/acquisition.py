"""The acquisitions of one patient: per-sequence contrast, scanner effects, files, thrombus and infarct masks.

Order (it is the order of the random draws): the susceptibility image (SWI or T2*-GRE, with phase),
DWI and ADC, FLAIR, T1w. Each acquisition samples the patient's MNI-space anatomy on its own grid,
adds vessels and the clot as partial volumes, forms the sequence's contrast, then the center's
scanner effects (bias field, intensity scale, Rician noise), and writes the image.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from ..core.sequences import LABELS, SEQUENCES
from . import render as R
from .atlas import Atlas
from .centers import SHEET_COLUMN, acquisition_grid
from .io import make_image, save_nifti, write_json
from .montage import canonical_slice
from .pathology import Pathology, Protocol, Streams
from .transform import PatientTransform

# BIDS names of the sequences (file suffix, folder)
BIDS = {"swi": ("swi", "anat"), "phase": ("part-phase_swi", "anat"), "t2star": ("T2starw", "anat"),
        "flair": ("FLAIR", "anat"), "t1w": ("T1w", "anat"), "dwi": ("dwi", "dwi"), "adc": ("adc", "dwi")}
HEAD_CENTRE_MNI = np.array([0.0, -17.0, 10.0])  # where the technologist aims (plus per-scan jitter)
DWI_NOISE_FACTOR = 2.0  # EPI is noisier than the anatomical scans
DWI_BIAS_FACTOR = 0.8  # bias-field strength of the DWI relative to the center's
ADC_MAX = 4.095e-3  # mm^2/s: the 12-bit range scanners store ADC in
ADC_UNITS = {1e6: "1e-6 mm2/s", 1e3: "1e-3 mm2/s", 1.0: "mm2/s"}
PHASE_LOWPASS_MM = 5.0  # homodyne filter width of the filtered phase


class Scanner:
    """The center's scanner for one patient: acquisition grids aimed at the head, smooth fields."""

    def __init__(self, center: dict, size: str, transform: PatientTransform, protocol: Protocol,
                 rng: np.random.Generator):
        self.center, self.size, self.transform, self.protocol, self.rng = center, size, transform, protocol, rng
        self.grids: dict[str, R.Grid] = {}  # config key -> grid, in acquisition order
        self._head_world = transform.mni_to_world(HEAD_CENTRE_MNI[None])[0]

    def grid(self, seq: str) -> R.Grid:
        """The grid of a new acquisition: the protocol's slab aimed at the head with a few mm of jitter."""
        z = float(self.center["sequences"][seq].get("z_center_mni", 10.0))
        aim = HEAD_CENTRE_MNI + np.array([self.rng.normal(0, 2.0), self.rng.normal(0, 3.0),
                                          z - HEAD_CENTRE_MNI[2] + self.rng.normal(0, 3.0)])
        centre_world = self.transform.mni_to_world(aim[None])[0]
        affine, shape = acquisition_grid(self.center, seq, self.size, centre_world, self.rng)
        self.grids[seq] = R.Grid(affine, shape)
        return self.grids[seq]

    def bias(self, grid: R.Grid, strength: float) -> np.ndarray:
        """Multiplicative bias field on a grid (the patient's polynomial, log amplitude ``strength``)."""
        field = R.polynomial_field(self.protocol.bias_coefs, self._head_world)
        return np.exp(R.coarse_eval(grid, lambda w: strength * field(w))).astype(np.float32)

    def background_phase(self, grid: R.Grid) -> np.ndarray:
        """Smooth background phase (rad) on a grid: B0 inhomogeneity and receive-phase offsets."""
        field = R.polynomial_field(self.protocol.background_coefs, self._head_world)
        return R.coarse_eval(grid, lambda w: self.protocol.background_amplitude * field(w))


class SubjectWriter:
    """Writes one subject's files under BIDS names and fills its sample-sheet row."""

    def __init__(self, outdir: Path, subject: str, center: dict):
        self.outdir, self.subject, self.center = Path(outdir), subject, center
        self.row = {"subject": subject, "center": center["name"], "split": "", **{c: "" for c in (*SEQUENCES, *LABELS)}}
        self.truth_files: dict[str, str] = {}  # files outside the sample sheet (the true brain mask)
        self.written: dict[str, tuple] = {}  # config key -> (stored voxels, affine), for the QC montage
        self._descrip = f"thrombseg synth {center['name']} sub-{subject}"

    def relative(self, path: Path) -> str:
        return path.relative_to(self.outdir).as_posix()

    def image_path(self, seq: str) -> Path:
        suffix, folder = BIDS[seq]
        return self.outdir / f"sub-{self.subject}" / folder / f"sub-{self.subject}_{suffix}.nii.gz"

    def label_path(self, name: str, folder: str) -> Path:
        return (self.outdir / "derivatives" / "labels" / f"sub-{self.subject}" / folder
                / f"sub-{self.subject}_label-{name}.nii.gz")

    def truth_path(self, suffix: str) -> Path:
        return self.outdir / "derivatives" / "truth" / f"sub-{self.subject}" / f"sub-{self.subject}_{suffix}"

    def image(self, seq: str, data: np.ndarray, affine: np.ndarray, dtype: str, scaled: bool = False,
              extra: dict | None = None) -> None:
        """Write an acquisition and its JSON sidecar, and enter it in the row."""
        img = make_image(data, affine, dtype, scaled=scaled, descrip=self._descrip)
        path = save_nifti(img, self.image_path(seq))
        self._sidecar(seq, extra or {})
        self.row[SHEET_COLUMN[seq]] = self.relative(path)
        self.written[seq] = (np.asarray(img.dataobj, np.float32), affine)

    def _sidecar(self, seq: str, extra: dict) -> None:
        series = self.center["sequences"].get(seq) or {}
        meta = {"MagneticFieldStrength": float(self.center["field_strength"]),
                "Manufacturer": self.center.get("manufacturer", "Synthetic"),
                "InstitutionName": self.center["name"], "GeneratedBy": "thrombseg.synth"}
        if "echo_time_ms" in series:
            meta["EchoTime"] = series["echo_time_ms"] / 1000.0
        meta.update(extra)
        write_json(meta, self.image_path(seq).with_suffix("").with_suffix(".json"))

    def mask(self, mask: np.ndarray, affine: np.ndarray, path: Path) -> str:
        """Write a uint8 mask; its path relative to the cohort root."""
        return self.relative(save_nifti(make_image(mask, affine, "uint8", descrip=self._descrip), path))


@dataclass
class Session:
    """What the acquisitions of one patient share (and the infarct mask, once a grid has drawn it)."""

    atlas: Atlas
    center: dict
    pathology: Pathology
    protocol: Protocol
    scanner: Scanner
    writer: SubjectWriter
    rng: Streams
    low_contrast: bool
    infarct_mask: InfarctMask | None = None

    def anatomy(self, grid: R.Grid, extra=(), with_infarct: bool = True) -> tuple[np.ndarray, R.Anatomy]:
        """MNI coordinates of the grid's voxels and the tissue fractions there."""
        coords = self.pathology.transform.grid_to_mni(grid.affine, grid.shape)
        field = self.pathology.infarct.field if with_infarct else None
        return coords, R.sample_anatomy(self.atlas, coords, grid, self.pathology.shell, extra=extra,
                                        infarct_field=field)

    def overlays(self, grid: R.Grid, coords: np.ndarray) -> tuple[R.Overlay, tuple]:
        """Vessels and microbleeds, and the clot, as partial-volume fractions on the grid."""
        transform = self.pathology.transform
        return (R.vessel_overlay(grid, transform, coords, self.pathology.vessels.cloud),
                R.thrombus_pv(grid, transform, self.pathology.vessels.clot, coords))


@dataclass
class InfarctMask:
    """The infarct label on the grid it is drawn on: DWI, else FLAIR, else the susceptibility image."""

    mask: np.ndarray   # uint8
    volume_ml: float
    n_pieces: int
    grid: R.Grid
    sequence: str      # config key of the grid

    @classmethod
    def draw(cls, anatomy: R.Anatomy, grid: R.Grid, sequence: str) -> InfarctMask:
        """Infarct voxels in parenchyma; its volume and number of connected pieces."""
        mask = (anatomy.extra["infarct"] >= 0.5) & ((anatomy.gm + anatomy.wm) >= 0.3)
        n_pieces = ndi.label(mask, structure=np.ones((3, 3, 3)))[1]
        volume_ml = float(mask.sum() * np.prod(grid.spacing) / 1000.0)
        return cls(mask.astype(np.uint8), volume_ml, int(n_pieces), grid, sequence)


@dataclass
class ThrombusMark:
    """The thrombus as annotated on the susceptibility grid."""

    centroid_world: np.ndarray
    volume_mm3: float
    montage_slice: np.ndarray  # canonical axial slice of the mask through its centroid


def _jitter(values: dict, rng: np.random.Generator, sd: float = 0.03) -> dict:
    """Per-patient contrast: every tissue value but iron scaled by 1 + N(0, sd)."""
    return {k: (float(x) * (1.0 + rng.normal(0, sd)) if k != "iron" else float(x)) for k, x in values.items()}


def _centroid_world(mask: np.ndarray, grid: R.Grid) -> np.ndarray | None:
    voxels = np.argwhere(mask)
    return grid.index_to_world(voxels.mean(0)[None])[0] if len(voxels) else None


def _infarct_fraction(anatomy: R.Anatomy) -> np.ndarray:
    """Infarct fraction of each voxel's parenchyma (CSF does not change signal)."""
    return np.clip(anatomy.extra["infarct"], 0, 1) * np.clip((anatomy.gm + anatomy.wm) * 1.5, 0, 1)


def _add_vessels_and_clot(img: np.ndarray, overlay: R.Overlay, clot: tuple, values: dict, low_contrast: bool) -> None:
    """Vessels, microbleeds and the clot (its low-contrast value for a low-contrast clot), in place."""
    R.apply_overlay(img, overlay, values)
    R.apply_clot(img, clot, values["clot_low"] if low_contrast else values["clot"])


# ---- susceptibility: SWI / T2*-GRE (+ phase), thrombus mask, brain mask ------------------------------
def _susceptibility_map(anatomy: R.Anatomy, overlay: R.Overlay, clot: tuple, low_contrast: bool) -> np.ndarray:
    """Magnetic susceptibility (ppm) of tissue, bone, iron, vessels and clot."""
    chi = (anatomy.gm * R.CHI["gm"] + anatomy.wm * R.CHI["wm"] + anatomy.bone * R.CHI["bone"]
           + anatomy.marrow * R.CHI["marrow"] + anatomy.extra["iron"] * R.CHI["iron"])
    _add_vessels_and_clot(chi, overlay, clot, R.CHI, low_contrast)
    return chi


def _field_phase(chi: np.ndarray, grid: R.Grid, field_strength: float, echo_time_s: float) -> np.ndarray:
    """Phase (rad) of the susceptibility field at the echo time."""
    rad_per_ppm = 2 * np.pi * R.GAMMA_MHZ_T * field_strength * echo_time_s
    phase = R.dipole_field(chi, grid)
    phase *= -rad_per_ppm
    return phase


def _noisy_complex(magnitude: np.ndarray, phase: np.ndarray, sigma: float,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Real and imaginary parts of the signal with Gaussian noise (Rician magnitude)."""
    real = np.cos(phase)
    real *= magnitude
    real += rng.standard_normal(phase.shape, dtype=np.float32) * sigma
    imag = np.sin(phase)
    imag *= magnitude
    imag += rng.standard_normal(phase.shape, dtype=np.float32) * sigma
    return real, imag


def _phase_images(real: np.ndarray, imag: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray]:
    """Filtered (homodyne: the low-pass phase removed) and raw phase of the complex signal."""
    low_real = R.smooth_lowres(real, spacing, PHASE_LOWPASS_MM)
    low_imag = R.smooth_lowres(imag, spacing, PHASE_LOWPASS_MM)
    filtered = np.arctan2(imag * low_real - real * low_imag, real * low_real + imag * low_imag).astype(np.float32)
    raw = np.arctan2(imag, real).astype(np.float32)
    return filtered, raw


def _susceptibility_signal(session: Session, grid: R.Grid, anatomy: R.Anatomy, values: dict, overlay: R.Overlay,
                           clot: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Magnitude (dephased: blooming), filtered and raw phase, after the scanner's bias, scale and noise."""
    seq = session.center["susceptibility"]
    magnitude = R.tissue_mix(anatomy, values)
    _add_vessels_and_clot(magnitude, overlay, clot, values, session.low_contrast)
    echo_time_s = float(session.center["sequences"][seq].get("echo_time_ms", 20.0)) / 1000.0
    phase = _field_phase(_susceptibility_map(anatomy, overlay, clot, session.low_contrast), grid,
                         float(session.center["field_strength"]), echo_time_s)
    magnitude *= R.dephasing(phase)
    magnitude *= session.scanner.bias(grid, float(session.center["bias"]))
    magnitude *= session.protocol.intensity_scale
    phase += session.scanner.background_phase(grid)
    sigma = session.protocol.noise * values["wm"] * session.protocol.intensity_scale
    real, imag = _noisy_complex(magnitude, phase, sigma, session.rng.noise)
    del phase, magnitude
    filtered, raw = _phase_images(real, imag, grid.spacing)
    return np.hypot(real, imag), filtered, raw


def _swi_weighting(magnitude: np.ndarray, filtered_phase: np.ndarray) -> None:
    """SWI: the magnitude times the 4th power of the negative-phase mask, in place."""
    phase_mask = np.where(filtered_phase < 0, 1.0 + filtered_phase / np.pi, 1.0).astype(np.float32)
    magnitude *= phase_mask ** 4


def _write_phase(session: Session, filtered: np.ndarray, raw: np.ndarray, grid: R.Grid) -> None:
    """The phase image as the center stores it: raw or filtered, integers or scaled radians."""
    config = session.center["sequences"]["phase"]
    phase = filtered if config.get("kind") == "filtered" else raw
    if config.get("storage") == "int":
        session.writer.image("phase", phase * (4096.0 / np.pi), grid.affine, "int16",
                             extra={"Units": "arbitrary (-4096..4095 = -pi..pi)", "PhaseKind": config.get("kind")})
    else:
        session.writer.image("phase", phase, grid.affine, "int16", scaled=True,
                             extra={"Units": "rad", "PhaseKind": config.get("kind")})


def _thrombus_mask(clot: tuple, grid: R.Grid, clot_volume_mm3: float) -> np.ndarray:
    """Voxels at least half clot; the most-clot voxels instead when those hold under half its volume."""
    voxel_mm3 = float(np.prod(grid.spacing))
    mask = np.zeros(int(np.prod(grid.shape)), np.uint8)
    idx, frac = clot
    sel = idx[frac >= 0.5]
    if len(sel) * voxel_mm3 < 0.5 * clot_volume_mm3 and len(idx):
        k = int(min(len(idx), max(1, round(clot_volume_mm3 / voxel_mm3))))
        sel = idx[np.argsort(-frac, kind="stable")[:k]]
    mask[sel] = 1
    return mask.reshape(grid.shape)


def _write_susceptibility_masks(session: Session, grid: R.Grid, anatomy: R.Anatomy, clot: tuple) -> ThrombusMark:
    """The thrombus label and the true brain mask on the susceptibility grid."""
    vessels, writer = session.pathology.vessels, session.writer
    mask = _thrombus_mask(clot, grid, vessels.clot_volume_mm3)
    writer.row["thrombus_mask"] = writer.mask(mask, grid.affine, writer.label_path("thrombus_mask", "anat"))
    brain = (anatomy.extra["brain"] >= 0.5).astype(np.uint8)
    writer.truth_files["brain_mask"] = writer.mask(brain, grid.affine, writer.truth_path("desc-brain_mask.nii.gz"))
    centroid = _centroid_world(mask, grid)
    if centroid is None:  # an empty mask: the clot's centre-line (where it is or was), else the head centre
        point = vessels.thrombus.pts.mean(0) if vessels.thrombus is not None else HEAD_CENTRE_MNI
        centroid = session.pathology.transform.mni_to_world(point[None])[0]
    return ThrombusMark(centroid, float(mask.sum() * np.prod(grid.spacing)),
                        canonical_slice(mask, grid.affine, centroid)[0])


def acquire_susceptibility(session: Session) -> ThrombusMark:
    """SWI or T2*-GRE (+ phase) with the thrombus and true brain masks on its grid.

    Without DWI and FLAIR the infarct mask is drawn here too.
    """
    seq = session.center["susceptibility"]
    grid = session.scanner.grid(seq)
    infarct_here = "dwi" not in session.protocol.present and "flair" not in session.protocol.present
    coords, anatomy = session.anatomy(grid, extra=("brain_iron",), with_infarct=infarct_here)
    values = _jitter(R.CONTRASTS[seq], session.rng.contrast)
    overlay, clot = session.overlays(grid, coords)
    magnitude, filtered, raw = _susceptibility_signal(session, grid, anatomy, values, overlay, clot)
    if seq == "swi":
        _swi_weighting(magnitude, filtered)
    session.writer.image(seq, magnitude, grid.affine, session.center["dtype"],
                         extra={"SeriesDescription": "SWI" if seq == "swi" else "T2* GRE"})
    if "phase" in session.protocol.present:
        _write_phase(session, filtered, raw, grid)
    del magnitude, filtered, raw
    if infarct_here:
        session.infarct_mask = InfarctMask.draw(anatomy, grid, seq)
    return _write_susceptibility_masks(session, grid, anatomy, clot)


# ---- diffusion: S0 and b1000 with Rician noise, ADC from their ratio ---------------------------------
def _diffusion_values(session: Session) -> tuple[dict, dict]:
    """Tissue values of the b0 and b1000 signals (b1000 = b0 * exp(-ADC), ADC in 1e-3 mm^2/s)."""
    b0 = _jitter(R.CONTRASTS["b0"], session.rng.contrast)
    adc = _jitter(R.CONTRASTS["adc"], session.rng.contrast, 0.02)
    adc["clot"] = adc["clot_low"] = session.protocol.clot_adc
    b1000 = {k: b0[k] * float(np.exp(-adc[k])) for k in b0 if k != "iron"}
    b1000["iron"] = 0.0
    return b0, b1000


def _diffusion_signals(session: Session, grid: R.Grid, coords: np.ndarray, anatomy: R.Anatomy, b0: dict,
                       b1000: dict) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free b0 and b1000 signals: tissue, infarct (T2 prolongation, restricted diffusion), vessels, clot."""
    s0 = R.tissue_mix(anatomy, b0, iron_key=None)
    s1000 = R.tissue_mix(anatomy, b1000, iron_key=None)
    infarct = _infarct_fraction(anatomy)
    t2_factor = session.protocol.infarct_t2_factor
    s0 *= 1 + (t2_factor - 1) * infarct
    s1000 *= 1 + (t2_factor * np.exp(0.8 * (1 - session.protocol.infarct_adc_ratio)) - 1) * infarct
    overlay, clot = session.overlays(grid, coords)
    R.apply_overlay(s0, overlay, b0)
    R.apply_overlay(s1000, overlay, b1000)
    R.apply_clot(s0, clot, b0["clot"])
    R.apply_clot(s1000, clot, b1000["clot"])
    return s0, s1000


def _adc_map(s0: np.ndarray, s1000: np.ndarray, zero_background_below: float | None) -> np.ndarray:
    """ADC (mm^2/s) from the noisy signals, clipped to the stored range; zero where S0 is background."""
    with np.errstate(divide="ignore", invalid="ignore"):
        adc = np.log(np.maximum(s0, 1e-6) / np.maximum(s1000, 1e-6)) / 1000.0
    adc = np.clip(np.nan_to_num(adc, nan=0.0, posinf=0.0, neginf=0.0), 0.0, ADC_MAX)
    if zero_background_below is not None:
        adc[s0 < zero_background_below] = 0.0
    return adc


def _write_adc(session: Session, adc: np.ndarray, grid: R.Grid) -> None:
    """The ADC map at the center's storage scale and dtype."""
    config = session.center["sequences"]["adc"]
    scale = float(config["scale"])
    units = ADC_UNITS.get(scale, f"x{config['scale']} mm2/s")
    session.writer.image("adc", adc * scale, grid.affine, config["dtype"],
                         extra={"Units": units, "Raw12bit": bool(session.center.get("adc_raw"))})


def acquire_diffusion(session: Session) -> None:
    """DWI (b1000 trace) and ADC on the DWI grid; the infarct mask is drawn here."""
    grid = session.scanner.grid("dwi")
    coords, anatomy = session.anatomy(grid)
    b0, b1000 = _diffusion_values(session)
    s0, s1000 = _diffusion_signals(session, grid, coords, anatomy, b0, b1000)
    bias = session.scanner.bias(grid, float(session.center["bias"]) * DWI_BIAS_FACTOR)
    sigma = session.protocol.noise * DWI_NOISE_FACTOR * b1000["wm"]
    s0 = R.rician(s0 * bias, sigma, session.rng.noise)
    s1000 = R.rician(s1000 * bias, sigma, session.rng.noise)
    zero_below = 0.15 * b0["wm"] if session.center.get("adc_background") == "zero" else None
    adc = _adc_map(s0, s1000, zero_below)
    session.writer.image("dwi", s1000 * session.protocol.intensity_scale / b1000["wm"] * 0.5, grid.affine,
                         session.center["dtype"], extra={"bValue": 1000, "SeriesDescription": "DWI trace b1000"})
    if "adc" in session.protocol.present:
        _write_adc(session, adc, grid)
    session.infarct_mask = InfarctMask.draw(anatomy, grid, "dwi")


# ---- FLAIR / T1w -----------------------------------------------------------------------------------
def _structural_contrast(session: Session, seq: str, anatomy: R.Anatomy, values: dict) -> np.ndarray:
    """Tissue signal of FLAIR or T1w (T1w: the template's texture in the brain) with the infarct."""
    img = R.tissue_mix(anatomy, values, iron_key=None)
    if seq == "t1w":
        parenchyma = np.clip((anatomy.gm + anatomy.wm) * 2, 0, 1)
        img += (anatomy.extra["t1"] - (anatomy.gm * 0.55 + anatomy.wm * 0.8)) * parenchyma
    img *= 1 + (session.protocol.infarct_flair_rise if seq == "flair" else -0.05) * _infarct_fraction(anatomy)
    return img


def acquire_structural(session: Session, seq: str) -> None:
    """FLAIR (hyperintense slow-flow vessels when the patient shows the sign) or T1w."""
    grid = session.scanner.grid(seq)
    coords, anatomy = session.anatomy(grid, extra=("t1",) if seq == "t1w" else ())
    values = _jitter(R.CONTRASTS[seq], session.rng.contrast)
    img = _structural_contrast(session, seq, anatomy, values)
    overlay, clot = session.overlays(grid, coords)
    slow_bright = session.protocol.hyperintense_vessel and seq == "flair"
    R.apply_overlay(img, overlay, values, slow_value=(0.85 if slow_bright else None))
    R.apply_clot(img, clot, 0.8 if slow_bright else values["clot"])
    img *= session.scanner.bias(grid, float(session.center["bias"]))
    scale = session.protocol.intensity_scale
    img = R.rician(img * scale, session.protocol.noise * values["wm"] * scale, session.rng.noise)
    session.writer.image(seq, img, grid.affine, session.center["dtype"], extra={"SeriesDescription": seq.upper()})
    if session.infarct_mask is None and seq == "flair":
        session.infarct_mask = InfarctMask.draw(anatomy, grid, "flair")


def write_infarct_mask(session: Session) -> np.ndarray | None:
    """The infarct label (next to the images of its grid); its world centroid, None when empty."""
    infarct = session.infarct_mask
    folder = "dwi" if infarct.sequence == "dwi" else "anat"
    session.writer.row["infarct_mask"] = session.writer.mask(infarct.mask, infarct.grid.affine,
                                                             session.writer.label_path("infarct_mask", folder))
    return _centroid_world(infarct.mask, infarct.grid)
