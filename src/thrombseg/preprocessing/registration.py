"""Co-registration with ANTsPy and label transport without losing tiny thrombi.

Conventions: a transform is a 4x4 matrix ``M`` in ITK/ANTs physical (LPS, mm) coordinates that maps a
point ``x`` of the *fixed* (reference) space to the point ``M @ x`` of the *moving* space, i.e. the
warped image is ``moving(M x)``, exactly as ``ants.apply_transforms(fixed, moving, fwdtransforms)``.

Robust start: registrations run on anti-aliased copies resampled to ``reg_spacing`` (2 mm) and begin
from the scanner geometry (identity in physical space: exact for LPS/RAS or oblique headers, since
ITK works in world coordinates). When the two images' foreground centres lie more than
``com_tolerance_mm`` apart (a lost or foreign header), a second run starts from the centre-of-mass
alignment and the one with the higher mutual information wins.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict, dataclass, field

import ants
import cc3d
import numpy as np

from ._io import PreprocessingError, like
from .skullstrip import registration_image


@dataclass
class Registration:
    """Result of :func:`register` (``matrix``: fixed -> moving, LPS mm)."""

    matrix: np.ndarray
    kind: str = "rigid"
    init: str = "identity"
    mi_before: float = float("nan")  # Mattes MI (higher is better) before / after, on the fixed mask
    mi_after: float = float("nan")
    seconds: float = 0.0
    tried: list = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["matrix"] = np.asarray(self.matrix).round(6).tolist()
        d["mi_before"] = round(float(self.mi_before), 5)
        d["mi_after"] = round(float(self.mi_after), 5)
        d["seconds"] = round(float(self.seconds), 3)
        return d

    @classmethod
    def identity(cls) -> Registration:
        return cls(np.eye(4), kind="identity", init="identity")


# --------------------------------------------------------------------------------------------------
# matrices <-> ANTs transforms
# --------------------------------------------------------------------------------------------------
def matrix_from_ants(tx: ants.ANTsTransform) -> np.ndarray:
    """4x4 fixed->moving matrix of an ANTs affine-family transform."""
    p = np.asarray(tx.parameters, float)
    c = np.asarray(tx.fixed_parameters, float)
    a = p[:9].reshape(3, 3)
    t = p[9:12]
    m = np.eye(4)
    m[:3, :3] = a
    m[:3, 3] = c + t - a @ c
    return m


def ants_from_matrix(m: np.ndarray) -> ants.ANTsTransform:
    m = np.asarray(m, float)
    return ants.create_ants_transform(transform_type="AffineTransform", dimension=3,
                                      matrix=m[:3, :3], offset=m[:3, 3])


def physical_points(img: ants.ANTsImage, mask: np.ndarray | None = None, max_points: int | None = None,
                    seed: int = 0) -> np.ndarray:
    """LPS physical coordinates of the voxels of ``mask`` (default: every voxel), optionally subsampled."""
    idx = np.argwhere(mask) if mask is not None else np.argwhere(np.ones(img.shape, bool))
    if max_points and len(idx) > max_points:
        idx = idx[np.random.default_rng(seed).choice(len(idx), max_points, replace=False)]
    d = np.asarray(img.direction, float) @ np.diag(img.spacing)
    return idx @ d.T + np.asarray(img.origin, float)


def resample(moving: ants.ANTsImage, reference: ants.ANTsImage, matrix: np.ndarray | None = None,
             interpolation: str = "linear") -> ants.ANTsImage:
    """``moving`` sampled on ``reference``'s grid through ``matrix`` (None: identity)."""
    tx = ants_from_matrix(np.eye(4) if matrix is None else matrix)
    return tx.apply_to_image(moving, reference, interpolation)


# --------------------------------------------------------------------------------------------------
# registration
# --------------------------------------------------------------------------------------------------
def _centroid(img: ants.ANTsImage) -> np.ndarray:
    a = img.numpy()
    w = a > np.percentile(a, 60)
    if not w.any():
        w = np.ones_like(a, bool)
    return physical_points(img, w, max_points=20000).mean(axis=0)


def _mi(fixed: ants.ANTsImage, moving_on_fixed: ants.ANTsImage, mask: ants.ANTsImage | None) -> float:
    try:
        v = ants.image_similarity(fixed, moving_on_fixed, metric_type="MattesMutualInformation",
                                  fixed_mask=mask)
    except Exception:
        return float("nan")
    return -float(v)


def register(fixed: ants.ANTsImage, moving: ants.ANTsImage, *, transform: str = "rigid",
             fixed_mask: ants.ANTsImage | None = None, reg_spacing: float = 2.0, init: str = "auto",
             com_tolerance_mm: float = 20.0, iterations=(100, 50, 25), seed: int = 42) -> Registration:
    """Register ``moving`` to ``fixed`` (Mattes MI, multi-resolution); returns a fixed->moving matrix.

    Args:
        transform: ``rigid`` (default) or ``affine``.
        fixed_mask: restrict the metric to this region of the fixed image (e.g. dilated brain).
        reg_spacing: registration runs on copies resampled to at least this spacing (mm).
        init: ``identity`` (scanner geometry), ``com`` (centre-of-mass alignment) or ``auto``.
    """
    if transform not in ("rigid", "affine"):
        raise PreprocessingError(f"registration transform must be 'rigid' or 'affine', got {transform!r}")
    if init not in ("auto", "identity", "com"):
        raise PreprocessingError(f"registration init must be 'auto', 'identity' or 'com', got {init!r}")
    t0 = time.perf_counter()
    fx = registration_image(fixed, reg_spacing)
    mv = registration_image(moving, reg_spacing)
    mask = None
    if fixed_mask is not None:
        mask = ants.threshold_image(resample(fixed_mask, fx, None, "linear"), 0.5, 1e9)
        if mask.numpy().sum() < 10:
            mask = None
    inits = [init] if init != "auto" else ["identity"]
    if init == "auto" and np.linalg.norm(_centroid(fx) - _centroid(mv)) > com_tolerance_mm:
        inits.append("com")
    n = len(iterations)
    kw = dict(aff_metric="mattes", aff_sampling=32, aff_random_sampling_rate=0.25,
              aff_iterations=tuple(iterations), aff_shrink_factors=(4, 2, 1)[-n:] if n <= 3 else (8, 4, 2, 1)[-n:],
              aff_smoothing_sigmas=(2, 1, 0)[-n:] if n <= 3 else (3, 2, 1, 0)[-n:], random_seed=seed)
    mi0 = _mi(fx, resample(mv, fx), mask)
    best: Registration | None = None
    tried = []
    for how in inits:
        with tempfile.TemporaryDirectory(prefix="thrombseg-reg-") as td:
            res = ants.registration(fx, mv, type_of_transform="Rigid" if transform == "rigid" else "Affine",
                                    initial_transform="Identity" if how == "identity" else None,
                                    mask=mask, outprefix=os.path.join(td, "r_"), **kw)
            m = matrix_from_ants(ants.read_transform(res["fwdtransforms"][0]))
        mi1 = _mi(fx, resample(mv, fx, m), mask)
        tried.append({"init": how, "mi_after": round(mi1, 5)})
        if best is None or (np.isfinite(mi1) and mi1 > best.mi_after):
            best = Registration(m, kind=transform, init=how, mi_before=mi0, mi_after=mi1)
    best.seconds = time.perf_counter() - t0
    best.tried = tried
    return best


# --------------------------------------------------------------------------------------------------
# labels
# --------------------------------------------------------------------------------------------------
def move_label(label: ants.ANTsImage, reference: ants.ANTsImage, matrix: np.ndarray | None = None,
               *, preserve_volume: bool = True, return_info: bool = False):
    """Binary ``label`` moved onto ``reference``'s grid, keeping every piece and its volume.

    The label is resampled as a float with linear interpolation. Instead of a fixed 0.5 threshold
    (which drops a thin 20-voxel thrombus moved onto a coarser or rotated grid), each connected piece
    of the interpolated support keeps its ``round(mass)`` most-covered voxels (at least one), where the
    mass is rescaled so that the total volume equals the source volume: the volume is preserved up to
    rounding and no piece disappears. ``preserve_volume=False`` gives the plain 0.5 threshold.
    """
    src = label.numpy() > 0.5
    v_src = float(src.sum() * np.prod(label.spacing))
    p = resample(like(label, src.astype(np.float32)), reference, matrix, "linear").numpy()
    v_t = float(np.prod(reference.spacing))
    if not preserve_volume or not src.any():
        out = p >= 0.5
    else:
        support = p > 1e-3
        out = np.zeros(p.shape, bool)
        if support.any():
            lab = cc3d.connected_components(support.astype(np.uint8), connectivity=26)
            idx = np.flatnonzero(support)
            lv = lab.ravel()[idx]
            pv = p.ravel()[idx]
            mass = np.bincount(lv, weights=pv)
            scale = (v_src / v_t) / float(pv.sum())
            k = np.maximum(1, np.rint(mass * scale)).astype(int)
            order = np.lexsort((-pv, lv))
            lv_sorted = lv[order]
            starts = np.searchsorted(lv_sorted, lv_sorted, side="left")
            rank = np.arange(len(order)) - starts
            keep = order[rank < k[lv_sorted]]
            out.ravel()[idx[keep]] = True
    res = like(reference, out.astype(np.float32))
    if return_info:
        v_out = float(out.sum() * v_t)
        info = {"volume_source_mm3": round(v_src, 3), "volume_moved_mm3": round(v_out, 3),
                "volume_ratio": round(v_out / v_src, 4) if v_src > 0 else None,
                "lost": bool(v_src > 0 and v_out == 0)}
        return res, info
    return res
