"""MNI152 2009 anatomy for the synthetic cohort, loaded offline from the nilearn wheel.

Everything here lives in MNI space and is built once per process (``get_atlas()``):

* 1 mm maps (uint8, 0..255): GM and WM probability, brain mask, T1 template, deep-grey iron;
  padded 24 mm below the template (z = -96 mm) with a medulla/cord cylinder so that the lowest
  axial slices of a long field of view still contain anatomy;
* 2 mm maps: signed distance (mm) to the intracranial envelope (negative inside) from which the
  CSF rim, the skull and the scalp are drawn; vascular territory labels; parenchyma fraction;
* a spherical table of the brain surface radius (for cortical veins and the sinuses).

The MNI152 2009 GM/WM maps and T1 template come from ``nilearn.datasets.load_mni152_*`` which
read files shipped inside the nilearn wheel (no network, no fetcher). nilearn is imported when the
atlas is first built, not with the module: the workflow imports ``thrombseg.synth`` to parse the
Snakefile and should not pay for it.
"""
from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

PAD_Z = 24  # mm of padding below the template's lowest slice (z = -72 mm)
HULL_CLAMP_MM = 9.0  # envelope distance given to deep non-brain head tissue

# vascular territory codes on the 2 mm label map; right hemisphere = left code + RIGHT_OFFSET
ACA, MCA_DEEP, MCA_SUP, MCA_INF, PCA = 1, 2, 3, 4, 5
RIGHT_OFFSET = 10
POSTERIOR_FOSSA = 20
TERRITORY_NAMES = {ACA: "ACA", MCA_DEEP: "MCA-deep", MCA_SUP: "MCA-superior", MCA_INF: "MCA-inferior",
                   PCA: "PCA", POSTERIOR_FOSSA: "posterior-fossa"}

# Iron-rich deep grey nuclei (dark on SWI/T2*, paramagnetic on phase): centre (right side, mm),
# semi-axes (mm), relative iron load.
IRON_NUCLEI = [
    ((19.0, -3.0, -1.0), (4.0, 8.0, 5.0), 1.0),     # globus pallidus
    ((26.0, 2.0, 2.0), (6.0, 14.0, 9.0), 0.35),     # putamen
    ((13.0, 12.0, 9.0), (5.0, 8.0, 8.0), 0.25),     # caudate head
    ((14.0, -26.0, 6.0), (6.0, 6.0, 5.0), 0.2),     # pulvinar
    ((5.0, -19.0, -9.0), (3.0, 3.0, 3.0), 0.9),     # red nucleus
    ((10.0, -16.0, -13.0), (3.0, 6.0, 2.5), 1.0),   # substantia nigra
    ((15.0, -57.0, -33.0), (6.0, 8.0, 5.0), 0.8),   # dentate nucleus
]

SURFACE_CENTRE = np.array([0.0, -18.0, 8.0])  # centre of the spherical brain-surface table (MNI mm)


@dataclass
class Atlas:
    origin1: np.ndarray      # MNI mm of voxel (0,0,0) of the 1 mm maps
    gm: np.ndarray           # uint8 1 mm
    wm: np.ndarray
    brain: np.ndarray        # uint8 0/255 brain mask (filled, includes ventricles)
    brain_iron: np.ndarray   # uint8 brain * (0.5 + 0.5 * iron): both from one interpolation
    t1: np.ndarray           # uint8 T1 template (brain only)
    iron: np.ndarray         # uint8 relative iron load
    origin2: np.ndarray      # MNI mm of voxel (0,0,0) of the 2 mm maps
    envelope_dist: np.ndarray  # float32 2 mm, signed distance (mm) to the intracranial envelope
    territory: np.ndarray    # uint8 2 mm territory codes (0 = none)
    tissue2: np.ndarray      # float32 2 mm parenchyma (GM+WM) fraction
    surf_theta: np.ndarray   # polar angles (rad) of the surface table
    surf_phi: np.ndarray     # azimuths (rad)
    surf_radius: np.ndarray  # (n_theta, n_phi) brain-surface distance from SURFACE_CENTRE (mm)

    # ---- helpers -------------------------------------------------------------------------------
    def mni_to_index1(self, pts: np.ndarray) -> np.ndarray:
        return np.asarray(pts, float) - self.origin1

    def mni_to_index2(self, pts: np.ndarray) -> np.ndarray:
        return (np.asarray(pts, float) - self.origin2) / 2.0

    def index2_to_mni(self, idx: np.ndarray) -> np.ndarray:
        return np.asarray(idx, float) * 2.0 + self.origin2

    def sample(self, name: str, pts: np.ndarray, order: int = 1) -> np.ndarray:
        """Sample a map at MNI points (N,3); uint8 maps are returned in [0, 1]."""
        vol = getattr(self, name)
        idx = self.mni_to_index2(pts) if name in ("envelope_dist", "territory", "tissue2") else self.mni_to_index1(pts)
        out = ndi.map_coordinates(vol, idx.T, order=order, mode="nearest", output=np.float32)
        return out / 255.0 if vol.dtype == np.uint8 and name != "territory" else out

    def surface_point(self, direction: np.ndarray, offset: float = 0.0) -> np.ndarray:
        """Point on the brain surface along unit ``direction`` from SURFACE_CENTRE, plus ``offset`` mm."""
        d = np.asarray(direction, float)
        d = d / np.linalg.norm(d, axis=-1, keepdims=True)
        theta = np.arccos(np.clip(d[..., 2], -1, 1))
        phi = np.arctan2(d[..., 1], d[..., 0])
        it = np.clip(np.round(theta / np.pi * (len(self.surf_theta) - 1)).astype(int), 0, len(self.surf_theta) - 1)
        ip = np.round((phi + np.pi) / (2 * np.pi) * len(self.surf_phi)).astype(int) % len(self.surf_phi)
        r = self.surf_radius[it, ip]
        return SURFACE_CENTRE + d * (r + offset)[..., None]


def _load_templates():
    """The 1 mm MNI152 2009 affine, T1, GM and WM maps (float32) and brain mask (bool)."""
    from nilearn import datasets

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t1 = datasets.load_mni152_template(resolution=1)
        gm = datasets.load_mni152_gm_template(resolution=1)
        wm = datasets.load_mni152_wm_template(resolution=1)
        brain = datasets.load_mni152_brain_mask(resolution=1)
    aff = t1.affine
    assert np.allclose(np.diag(aff)[:3], 1.0), "expected the 1 mm MNI152 template"
    return (aff, np.asarray(t1.dataobj, dtype=np.float32), np.asarray(gm.dataobj, dtype=np.float32),
            np.asarray(wm.dataobj, dtype=np.float32), np.asarray(brain.dataobj) > 0)


def _fill_holes(mask: np.ndarray, planar: bool) -> np.ndarray:
    """Fill holes (3-D, or independently in each axial plane) via one labelling of the background."""
    if planar:
        st = np.zeros((3, 3, 3), bool)
        st[:, :, 1] = ndi.generate_binary_structure(2, 1)
    else:
        st = ndi.generate_binary_structure(3, 1)
    lab, n = ndi.label(~mask, structure=st)
    if n == 0:
        return mask.copy()
    border = np.zeros(mask.shape, bool)
    border[[0, -1], :, :] = True
    border[:, [0, -1], :] = True
    if not planar:
        border[:, :, [0, -1]] = True
    outside = np.zeros(n + 1, bool)
    outside[np.unique(lab[border & ~mask])] = True
    outside[0] = False
    return mask | ~outside[lab] & (lab > 0)


def _to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def _ellipsoid_map(shape, origin, nuclei) -> np.ndarray:
    out = np.zeros(shape, np.float32)
    for (cx, cy, cz), (ax, ay, az), load in nuclei:
        for side in (-1.0, 1.0):
            c = np.array([side * cx, cy, cz])
            lo = np.maximum(np.floor(c - np.array([ax, ay, az]) - 3 - origin).astype(int), 0)
            hi = np.minimum(np.ceil(c + np.array([ax, ay, az]) + 3 - origin).astype(int) + 1, shape)
            g = np.stack(np.meshgrid(*[np.arange(lo[i], hi[i]) + origin[i] for i in range(3)], indexing="ij"))
            q = ((g[0] - c[0]) / ax) ** 2 + ((g[1] - c[1]) / ay) ** 2 + ((g[2] - c[2]) / az) ** 2
            val = load / (1.0 + np.exp((np.sqrt(q) - 1.0) * 6.0))
            sl = tuple(slice(lo[i], hi[i]) for i in range(3))
            out[sl] = np.maximum(out[sl], val)
    return out


def _territories(origin2, shape2, tissue2) -> np.ndarray:
    g = np.stack(np.meshgrid(*[np.arange(shape2[i]) * 2.0 + origin2[i] for i in range(3)], indexing="ij"))
    # irregular (not box-like) borders: a fixed smooth random displacement of the rules (~5 mm)
    hemi_right = g[0] > 0  # the hemisphere follows the true midline
    rng = np.random.default_rng(20091)
    for c in range(3):
        n = ndi.gaussian_filter(rng.standard_normal(shape2), 3.0)
        g[c] += n / (n.std() + 1e-9) * 3.5
    x, y, z = g
    ax = np.abs(x)
    lab = np.zeros(shape2, np.uint8)
    tissue = tissue2 > 0.3
    # tentorium: rises from z=-18 at y=-40 to about z=-5 at the occipital pole
    z_tent = np.where(y < -40, -18.0 + (-(y + 40.0)) * 0.22, -18.0)
    brainstem = (ax < 14) & (y > -45) & (y < -8) & (z < -10)
    pf = ((y < -30) & (z < z_tent)) | brainstem
    thalamus = (ax < 20) & (y > -35) & (y < -8) & (z > -4) & (z < 18)
    pca = (y < -68) | ((z < 0) & (y < -30) & (ax < 40)) | thalamus
    aca = ((ax < 14 + np.maximum(0.0, z - 40.0) * 0.3) & (y > -45) & (z > -5)) | ((ax < 12) & (y > 10) & (z > -20))
    deep = (ax > 8) & (ax < 32) & (y > -22) & (y < 24) & (z > -8) & (z < 22) & ~thalamus
    z_syl = -0.35 * y
    mca_sup = z >= z_syl
    cer = np.where(pca, PCA, np.where(aca, ACA, np.where(deep, MCA_DEEP, np.where(mca_sup, MCA_SUP, MCA_INF))))
    cer = cer + np.where(hemi_right, RIGHT_OFFSET, 0)
    lab[:] = np.where(pf, POSTERIOR_FOSSA, cer)
    lab[~tissue] = 0
    return lab


def _surface_table(brain1: np.ndarray, origin1: np.ndarray, n_theta=91, n_phi=180):
    theta = np.linspace(0, np.pi, n_theta)
    phi = np.linspace(-np.pi, np.pi, n_phi, endpoint=False)
    tt, pp = np.meshgrid(theta, phi, indexing="ij")
    d = np.stack([np.sin(tt) * np.cos(pp), np.sin(tt) * np.sin(pp), np.cos(tt)], -1)
    radii = np.arange(0.0, 130.0, 1.0)
    pts = SURFACE_CENTRE + d[..., None, :] * radii[:, None]  # (nt, np, nr, 3)
    idx = (pts - origin1).reshape(-1, 3).T
    inside = ndi.map_coordinates(brain1.astype(np.float32), idx, order=1, mode="constant", cval=0.0)
    inside = inside.reshape(n_theta, n_phi, len(radii)) > 0.5
    # last inside radius along each ray
    last = np.where(inside.any(-1), len(radii) - 1 - np.argmax(inside[..., ::-1], axis=-1), 0)
    return theta, phi, radii[last].astype(np.float32)


def _pad_below(brain, gm, wm, t1, origin: np.ndarray):
    """Maps padded PAD_Z mm below the template with a medulla/cord cylinder that thins downward."""
    low = brain[:, :, :4].any(-1)  # the template's lowest 4 slices locate the medulla
    ci = np.argwhere(low)
    ctr = ci.mean(0) if len(ci) else np.array([98.0, 92.0])
    pad = np.zeros(brain.shape[:2] + (PAD_Z,), bool)
    gx, gy = np.meshgrid(np.arange(brain.shape[0]), np.arange(brain.shape[1]), indexing="ij")
    for k in range(PAD_Z):
        r = 6.0 - 1.5 * (PAD_Z - k) / PAD_Z
        pad[:, :, k] = (gx - ctr[0]) ** 2 + (gy - ctr[1]) ** 2 <= r * r
    padf = pad.astype(np.float32)
    return (np.concatenate([pad, brain], axis=2), np.concatenate([padf * 0.25, gm], axis=2),
            np.concatenate([padf * 0.75, wm], axis=2), np.concatenate([padf * 0.8, t1], axis=2),
            origin - np.array([0.0, 0.0, PAD_Z]))


def _downsample2(vol: np.ndarray, reduce) -> np.ndarray:
    """2x2x2 blocks of a 1 mm map (zero-padded to even sizes) reduced by ``reduce`` (any, mean)."""
    sh2 = tuple(int(np.ceil(n / 2)) for n in vol.shape)
    padded = np.zeros(tuple(2 * n for n in sh2), vol.dtype)
    padded[: vol.shape[0], : vol.shape[1], : vol.shape[2]] = vol
    return reduce(padded.reshape(sh2[0], 2, sh2[1], 2, sh2[2], 2), axis=(1, 3, 5))


def _intracranial_envelope(brain2: np.ndarray, origin2: np.ndarray) -> np.ndarray:
    """Brain closed (radius 8 mm), holes filled, smoothed, basal cisterns included; 2 mm grid."""
    m = 6
    big = np.pad(brain2, m)
    dil = ndi.distance_transform_edt(~big) <= 4.0
    env = ndi.distance_transform_edt(dil) > 4.0
    env = _fill_holes(env[m:-m, m:-m, m:-m], planar=False)
    env = ndi.gaussian_filter(env.astype(np.float32), 1.0) > 0.5
    env |= ndi.binary_dilation(brain2, iterations=1)
    # basal cisterns (suprasellar, interpeduncular, ambient): enclosed in axial slices above the sella
    z2 = np.arange(env.shape[2]) * 2.0 + origin2[2]
    above = z2 > -32.0
    env[:, :, above] = _fill_holes(env[:, :, above], planar=True)
    return env


def _head_hull(env: np.ndarray) -> np.ndarray:
    """The head's outline: per axial slice, the envelope closed by 20 mm and its holes filled."""
    pad2 = 12
    e2 = np.pad(env, ((pad2, pad2), (pad2, pad2), (0, 0)))
    far = (1.0, 1.0, 1e4)  # EDT restricted to axial planes
    dil = ndi.distance_transform_edt(~e2, sampling=far) <= 10.0
    clo = ndi.distance_transform_edt(dil, sampling=far) > 10.0
    return _fill_holes(clo | e2, planar=True)[pad2:-pad2, pad2:-pad2]


def _envelope_distance(env: np.ndarray) -> np.ndarray:
    """Signed distance (mm, ~0 at the boundary, negative inside) to the envelope, clamped in the head."""
    dist_out = ndi.distance_transform_edt(~env) * 2.0
    dist_in = ndi.distance_transform_edt(env) * 2.0
    envelope_dist = (dist_out - dist_in + 1.0).astype(np.float32)
    # inside the head hull but far from the brain (skull base, between temporal lobes and
    # cerebellum): clamp the distance so that it renders as skull / deep soft tissue, not air
    envelope_dist[_head_hull(env) & (envelope_dist > HULL_CLAMP_MM)] = HULL_CLAMP_MM
    return envelope_dist


@functools.lru_cache(maxsize=1)
def get_atlas() -> Atlas:
    """The atlas: padded 1 mm template maps, then the 2 mm envelope, territories and surface table."""
    aff, t1, gm, wm, brain = _load_templates()
    brain, gm, wm, t1, origin1 = _pad_below(brain, gm, wm, t1, aff[:3, 3].astype(float))
    brain = _fill_holes(brain, planar=False)
    # keep GM+WM <= 1 and inside-brain consistent
    s = gm + wm
    over = s > 1.0
    gm[over] /= s[over]
    wm[over] /= s[over]
    iron = _ellipsoid_map(brain.shape, origin1, IRON_NUCLEI) * brain
    brain2 = _downsample2(brain, np.any)
    tissue2 = _downsample2(gm + wm, np.mean).astype(np.float32)
    origin2 = origin1 + 0.5  # centre of the first 2x2x2 block
    envelope_dist = _envelope_distance(_intracranial_envelope(brain2, origin2))
    theta, phi, radius = _surface_table(brain, origin1)
    return Atlas(origin1=origin1, gm=_to_u8(gm), wm=_to_u8(wm), brain=_to_u8(brain.astype(np.float32)),
                 t1=_to_u8(t1), iron=_to_u8(iron),
                 brain_iron=_to_u8(brain * (0.5 + 0.5 * iron)), origin2=origin2, envelope_dist=envelope_dist,
                 territory=_territories(origin2, brain2.shape, tissue2), tissue2=tissue2,
                 surf_theta=theta, surf_phi=phi, surf_radius=radius)


def territory_code(name: str, hemisphere: str) -> int:
    """Code on the territory map of a territory name (ACA, MCA-deep, ...) in a hemisphere (L/R)."""
    inv = {v: k for k, v in TERRITORY_NAMES.items()}
    code = inv[name]
    if code == POSTERIOR_FOSSA:
        return code
    return code + (RIGHT_OFFSET if hemisphere == "R" else 0)
