"""From MNI-space anatomy to the images of one acquisition grid.

Per grid: sample tissue fractions at the MNI position of each voxel (GM, WM, CSF, skull, diploe,
scalp), overlay vessels / microbleeds / thrombus as partial-volume fractions, then form the contrast
of the sequence. The susceptibility images follow the physics loosely: a susceptibility map is turned
into a field shift by the dipole kernel (FFT), giving phase, intra-voxel dephasing (blooming) and the
SWI phase mask; noise is added to the complex signal (Rician magnitude).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from .atlas import Atlas
from .transform import PatientTransform, _upsample_axis
from .vessels import ARTERY, MICROBLEED, SLOW, VEIN, Thrombus, VesselCloud

GAMMA_MHZ_T = 42.577

# tissue values per contrast: gm, wm, csf, bone, marrow, scalp, artery, vein, slow (stagnant artery),
# microbleed, clot (low-contrast clot in clot_low)
CONTRASTS = {
    "swi": dict(gm=0.80, wm=0.70, csf=0.95, bone=0.04, marrow=0.30, scalp=0.55, artery=0.85, vein=0.32,
                slow=0.78, mb=0.15, clot=0.10, clot_low=0.50, iron=0.45),
    "t2star": dict(gm=0.75, wm=0.60, csf=1.00, bone=0.04, marrow=0.35, scalp=0.50, artery=0.62, vein=0.45,
                   slow=0.66, mb=0.15, clot=0.14, clot_low=0.52, iron=0.30),
    "flair": dict(gm=0.78, wm=0.62, csf=0.07, bone=0.04, marrow=0.65, scalp=0.80, artery=0.06, vein=0.12,
                  slow=0.10, mb=0.45, clot=0.35, clot_low=0.40, iron=0.10),
    "t1w": dict(gm=0.55, wm=0.80, csf=0.15, bone=0.04, marrow=0.85, scalp=0.75, artery=0.25, vein=0.35,
                slow=0.40, mb=0.50, clot=0.55, clot_low=0.55, iron=0.0),
    # diffusion: b0 signal (fat-suppressed EPI) and ADC (1e-3 mm^2/s)
    "b0": dict(gm=0.75, wm=0.62, csf=1.60, bone=0.03, marrow=0.06, scalp=0.08, artery=0.05, vein=0.25,
               slow=0.50, mb=0.20, clot=0.55, clot_low=0.60, iron=0.10),
    "adc": dict(gm=0.85, wm=0.72, csf=3.00, bone=1.50, marrow=1.00, scalp=0.80, artery=2.50, vein=1.80,
                slow=1.00, mb=0.80, clot=0.75, clot_low=0.80, iron=0.0),
}
# magnetic susceptibility (ppm, relative to water)
CHI = dict(gm=0.02, wm=-0.03, csf=0.0, bone=-0.8, marrow=-0.3, scalp=0.0, artery=0.0, vein=0.35, slow=0.03,
           mb=0.9, clot=0.7, clot_low=0.18, iron=0.12)


def ramp(x):
    return np.clip(x + 0.5, 0.0, 1.0)


@dataclass
class Grid:
    affine: np.ndarray
    shape: tuple

    @property
    def spacing(self) -> np.ndarray:
        return np.sqrt((self.affine[:3, :3] ** 2).sum(0))

    @property
    def h(self) -> float:  # effective partial-volume width
        return float(np.prod(self.spacing) ** (1.0 / 3.0))

    def index_to_world(self, idx: np.ndarray) -> np.ndarray:
        return (self.affine[:3, :3] @ np.asarray(idx, float).T + self.affine[:3, 3:4]).T

    def world_to_index(self, pts: np.ndarray) -> np.ndarray:
        inv = np.linalg.inv(self.affine)
        return (inv[:3, :3] @ np.asarray(pts, float).T + inv[:3, 3:4]).T


@dataclass
class Shell:
    csf_rim: float      # mm of CSF between envelope and skull
    skull: float        # skull thickness (mm)
    scalp: float        # scalp thickness (mm)


@dataclass
class Anatomy:
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    bone: np.ndarray
    marrow: np.ndarray
    scalp: np.ndarray
    extra: dict


def sample_anatomy(atlas: Atlas, coords: np.ndarray, grid: Grid, shell: Shell, extra=(),
                   infarct_field: np.ndarray | None = None) -> Anatomy:
    """Tissue fractions on a grid whose voxels sit at MNI ``coords`` (3, *shape)."""
    # shells from the (2 mm) envelope distance everywhere; brain maps only inside the envelope
    i2 = coords - atlas.origin2.reshape(3, 1, 1, 1).astype(np.float32)
    i2 *= 0.5
    d = ndi.map_coordinates(atlas.envelope_dist, i2, order=1, mode="nearest", output=np.float32)
    inside = np.flatnonzero(d < shell.csf_rim + 2.0 * grid.h + 1.0)
    sub2 = np.stack([i2[c].reshape(-1)[inside] for c in range(3)])
    del i2
    ex = {}
    if infarct_field is not None:
        ex["infarct"] = _scatter(ndi.map_coordinates(infarct_field, sub2, order=1, mode="constant", cval=0.0,
                                                     output=np.float32), inside, d.shape)
    sub1 = sub2 * 2.0 + (atlas.origin2 - atlas.origin1).astype(np.float32)[:, None]
    del sub2
    kw = dict(order=1, mode="nearest", output=np.float32)
    gm = _scatter(ndi.map_coordinates(atlas.gm, sub1, **kw) * np.float32(1 / 255.0), inside, d.shape)
    wm = _scatter(ndi.map_coordinates(atlas.wm, sub1, **kw) * np.float32(1 / 255.0), inside, d.shape)
    for name in extra:
        v = _scatter(ndi.map_coordinates(getattr(atlas, name), sub1, **kw) * np.float32(1 / 255.0), inside, d.shape)
        if name == "brain_iron":  # packed: brain * (0.5 + 0.5 * iron)
            ex["brain"] = np.clip(v * 2.0, 0.0, 1.0)
            ex["iron"] = np.clip(v * 2.0 - 1.0, 0.0, 1.0)
        else:
            ex[name] = v
    del sub1
    h = grid.h
    c1, c2, c3 = shell.csf_rim, shell.csf_rim + shell.skull, shell.csf_rim + shell.skull + shell.scalp
    intra = ramp((c1 - d) / h)
    bone = ramp((d - c1) / h) * ramp((c2 - d) / h)
    marrow = bone * ramp((d - c1 - 1.8) / h) * ramp((c2 - 1.8 - d) / h) * 0.8
    bone -= marrow
    scalp = ramp((d - c2) / h) * ramp((c3 - d) / h)
    csf = np.clip(intra - gm - wm, 0.0, 1.0)
    return Anatomy(gm, wm, csf, bone, marrow, scalp, ex)


def _scatter(vals: np.ndarray, flat: np.ndarray, shape) -> np.ndarray:
    out = np.zeros(int(np.prod(shape)), np.float32)
    out[flat] = vals
    return out.reshape(shape)


def tissue_mix(an: Anatomy, v: dict, iron_key: str | None = "iron") -> np.ndarray:
    gm_v = v["gm"]
    wm_v = v["wm"]
    out = an.gm * gm_v + an.wm * wm_v
    if iron_key and "iron" in an.extra and v.get("iron", 0.0):
        # iron shortens T2*: darker deep grey nuclei
        out *= 1.0 - v["iron"] * an.extra["iron"]
    out += an.csf * v["csf"] + an.bone * v["bone"] + an.marrow * v["marrow"] + an.scalp * v["scalp"]
    return out


# ---------------------------------------------------------------------------------------------------
# vessels, microbleeds and thrombus as partial-volume fractions
# ---------------------------------------------------------------------------------------------------
@dataclass
class Overlay:
    flat: np.ndarray   # flat voxel indices
    frac: np.ndarray   # partial-volume fraction (0..1)
    kind: np.ndarray   # vessel kind per voxel


def _candidates(grid: Grid, tf: PatientTransform, pts_mni: np.ndarray, margin_mm: float) -> np.ndarray:
    """Boolean grid of voxels within ~margin of the given MNI points (inverse-mapped)."""
    idx = np.round(grid.world_to_index(tf.mni_to_world(pts_mni))).astype(int)
    ok = np.all((idx >= -3) & (idx < np.array(grid.shape) + 3), axis=1)
    idx = np.clip(idx[ok], 0, np.array(grid.shape) - 1)
    mark = np.zeros(grid.shape, np.uint8)
    mark[tuple(idx.T)] = 1
    m = [int(np.ceil(margin_mm / s)) for s in grid.spacing]
    return ndi.maximum_filter(mark, size=[2 * k + 1 for k in m]) > 0


def vessel_overlay(grid: Grid, tf: PatientTransform, coords: np.ndarray, cloud: VesselCloud) -> Overlay:
    """Partial-volume fractions of vessels and microbleeds: thin and thick structures queried apart."""
    h = grid.h
    n = int(np.prod(grid.shape))
    best = np.zeros(n, np.float32)
    kind = np.zeros(n, np.int8)
    for sel in (cloud.radius <= 1.3, cloud.radius > 1.3):
        if not sel.any():
            continue
        pts, rad, knd = cloud.pts[sel], cloud.radius[sel], cloud.kind[sel]
        rmax = float(rad.max())
        flat = np.flatnonzero(_candidates(grid, tf, pts, rmax + h))
        p = np.stack([coords[i].reshape(-1)[flat] for i in range(3)], 1)
        d, j = cKDTree(pts).query(p, distance_upper_bound=rmax + 0.5 * h)
        hit = np.isfinite(d)
        flat, d, j = flat[hit], d[hit], j[hit]
        r = rad[j]
        frac = (ramp((r - d) / h) * np.minimum(1.0, 2.0 * r / h)).astype(np.float32)
        better = frac > best[flat]
        best[flat[better]] = frac[better]
        kind[flat[better]] = knd[j[better]]
    flat = np.flatnonzero(best > 0.01)
    return Overlay(flat, best[flat], kind[flat])


def thrombus_pv(grid: Grid, tf: PatientTransform, thr: Thrombus | None, coords: np.ndarray,
                sub_mm: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Partial volume of the clot on a grid by supersampling: (flat indices, fraction); none without a clot."""
    if thr is None:
        return np.zeros(0, int), np.zeros(0, np.float32)
    rmax = float(thr.radius.max())
    cand = _candidates(grid, tf, thr.pts, rmax + 2.0)
    flat = np.flatnonzero(cand)
    if len(flat) == 0:
        return np.zeros(0, int), np.zeros(0, np.float32)
    tree = cKDTree(thr.pts)
    # keep voxels whose centre is within radius + half diagonal (+ slack) of the clot
    half_diag = 0.5 * float(np.linalg.norm(grid.spacing)) + 0.3
    p = np.stack([coords[i].reshape(-1)[flat] for i in range(3)], 1)
    d, j = tree.query(p, distance_upper_bound=rmax + half_diag)
    ok = np.isfinite(d)
    ok[ok] = d[ok] <= thr.radius[j[ok]] + half_diag
    flat = flat[ok]
    if len(flat) == 0:
        return np.zeros(0, int), np.zeros(0, np.float32)
    vox = np.stack(np.unravel_index(flat, grid.shape), 1)
    ns = [max(2, int(np.ceil(sp / sub_mm))) for sp in grid.spacing]
    offs = np.stack(np.meshgrid(*[(np.arange(n) + 0.5) / n - 0.5 for n in ns], indexing="ij"), -1).reshape(-1, 3)
    sub = (vox[:, None, :] + offs[None]).reshape(-1, 3)
    mni = tf.world_to_mni(grid.index_to_world(sub))
    d, j = tree.query(mni, distance_upper_bound=rmax + 0.01)
    inside = np.zeros(len(mni), bool)
    ok = np.isfinite(d)
    inside[ok] = d[ok] <= thr.radius[j[ok]]
    frac = inside.reshape(len(vox), -1).mean(1).astype(np.float32)
    keep = frac > 0
    return flat[keep], frac[keep]


def apply_overlay(img: np.ndarray, ov: Overlay, v: dict, slow_value: float | None = None) -> None:
    vals = np.select([ov.kind == ARTERY, ov.kind == VEIN, ov.kind == SLOW, ov.kind == MICROBLEED],
                     [v["artery"], v["vein"], v["slow"] if slow_value is None else slow_value, v["mb"]])
    flat = img.reshape(-1)
    flat[ov.flat] = flat[ov.flat] * (1 - ov.frac) + vals * ov.frac


def apply_clot(img: np.ndarray, clot: tuple, value: float) -> None:
    flat = img.reshape(-1)
    idx, frac = clot
    flat[idx] = flat[idx] * (1 - frac) + value * frac


# ---------------------------------------------------------------------------------------------------
# smooth fields, noise
# ---------------------------------------------------------------------------------------------------
def coarse_eval(grid: Grid, func, step_mm: float = 8.0) -> np.ndarray:
    """Evaluate ``func(world (3,N)) -> (N,)`` on a coarse sub-grid and upsample linearly."""
    shape = grid.shape
    cidx = [np.linspace(0, n - 1, max(2, int(np.ceil((n - 1) * s / step_mm)) + 1)) if n > 1 else np.zeros(1)
            for n, s in zip(shape, grid.spacing)]
    g = np.stack(np.meshgrid(*cidx, indexing="ij")).reshape(3, -1)
    w = grid.affine[:3, :3] @ g + grid.affine[:3, 3:4]
    out = np.asarray(func(w), np.float32).reshape(1, *[len(c) for c in cidx])
    for ax in range(3):
        out = _upsample_axis(out, ax + 1, cidx[ax], shape[ax])
    return out[0]


def polynomial_field(coefs: np.ndarray, centre: np.ndarray):
    """Degree-2 polynomial in world coordinates (per 100 mm) about ``centre``."""
    def f(w):
        x, y, z = (w - np.asarray(centre, float).reshape(3, 1)) / 100.0
        terms = np.stack([x, y, z, x * x, y * y, z * z, x * y, x * z, y * z])
        return np.tensordot(coefs, terms, axes=1)
    return f


def smooth_lowres(a: np.ndarray, spacing, sigma_mm: float) -> np.ndarray:
    """Approximate Gaussian smoothing (sigma_mm) via block-averaging to ~sigma/2 and upsampling."""
    f = [max(1, int(round(sigma_mm / 2.0 / s))) for s in spacing]
    shp = a.shape
    pad = [(-n) % k for n, k in zip(shp, f)]
    ap = np.pad(a, [(0, p) for p in pad], mode="edge")
    ns = [n // k for n, k in zip(ap.shape, f)]
    blocks = ap.reshape(ns[0], f[0], ns[1], f[1], ns[2], f[2]).mean(axis=(1, 3, 5))
    sig = [sigma_mm / (k * s) for k, s in zip(f, spacing)]
    blocks = ndi.gaussian_filter(blocks, sig, mode="nearest")
    out = blocks
    for ax in range(3):
        cpos = (np.arange(ns[ax]) + 0.5) * f[ax] - 0.5
        if ns[ax] == 1:
            out = np.repeat(out, shp[ax], axis=ax)
            continue
        out = _upsample_axis(out.astype(np.float32), ax, cpos, shp[ax])
    return out


def rician(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    n1 = rng.standard_normal(signal.shape, dtype=np.float32)
    n1 *= sigma
    n1 += signal
    n2 = rng.standard_normal(signal.shape, dtype=np.float32)
    n2 *= sigma
    return np.sqrt(n1 * n1 + n2 * n2)


# ---------------------------------------------------------------------------------------------------
# susceptibility: dipole field, phase, blooming, SWI
# ---------------------------------------------------------------------------------------------------
def dipole_field(chi: np.ndarray, grid: Grid) -> np.ndarray:
    """Field shift (ppm) of a susceptibility map (ppm), B0 along world z."""
    pad = [min(16, n // 4) if n > 8 else 0 for n in chi.shape]
    shp = [sfft.next_fast_len(n + 2 * p, real=True) for n, p in zip(chi.shape, pad)]
    big = np.zeros(shp, np.float32)
    big[pad[0]:pad[0] + chi.shape[0], pad[1]:pad[1] + chi.shape[1], pad[2]:pad[2] + chi.shape[2]] = chi
    K = sfft.rfftn(big, workers=1)
    sp = grid.spacing
    b = grid.affine[2, :3] / sp  # world-z component of each voxel axis (unit directions)
    k0 = sfft.fftfreq(shp[0], d=sp[0]).astype(np.float32)[:, None, None]
    k1 = sfft.fftfreq(shp[1], d=sp[1]).astype(np.float32)[None, :, None]
    k2 = sfft.rfftfreq(shp[2], d=sp[2]).astype(np.float32)[None, None, :]
    kb = k0 * b[0] + k1 * b[1] + k2 * b[2]
    k2sum = k0 * k0 + k1 * k1 + k2 * k2
    k2sum[0, 0, 0] = 1.0
    D = np.float32(1.0 / 3.0) - kb * kb / k2sum
    D[0, 0, 0] = 0.0
    K *= D
    out = sfft.irfftn(K, s=shp, workers=1)
    return out[pad[0]:pad[0] + chi.shape[0], pad[1]:pad[1] + chi.shape[1], pad[2]:pad[2] + chi.shape[2]].astype(np.float32)


BLOOM = 2.0  # finite differences of a voxelised field underestimate the sub-voxel field spread


def dephasing(phase: np.ndarray, bloom: float = BLOOM) -> np.ndarray:
    """Signal fraction left by intra-voxel dephasing of a phase map (rad): prod |sinc(dphi/2)|."""
    att = np.ones(phase.shape, np.float32)
    for ax in range(3):
        if phase.shape[ax] < 2:
            continue
        g = np.gradient(phase, axis=ax)
        g *= bloom
        att *= np.abs(np.sinc(g / (2 * np.pi))).astype(np.float32)
    return att
