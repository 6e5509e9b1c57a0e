"""Infarct downstream of the occluded artery, drawn in MNI space on the 2 mm territory grid."""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .atlas import ACA, MCA_DEEP, MCA_INF, MCA_SUP, PCA, POSTERIOR_FOSSA, RIGHT_OFFSET, TERRITORY_NAMES, Atlas

LACUNAR = "lacunar"  # a small deep infarct of a perforating artery, with no clot to see: a site and a class here


def territories_for(site: str, vessel: str, hemisphere: str, rng: np.random.Generator) -> list[int]:
    """Territory codes an occlusion at ``site`` (in ``vessel``) may infarct; a lacune: the deep MCA territory."""
    off = RIGHT_OFFSET if hemisphere == "R" else 0
    if site == LACUNAR:  # lenticulostriate perforators: basal ganglia, internal capsule, corona radiata
        return [MCA_DEEP + off]
    if site in ("ICA", "M1"):
        codes = [MCA_DEEP, MCA_SUP, MCA_INF]
        if site == "ICA" and rng.random() < 0.3:
            codes.append(ACA)
        return [c + off for c in codes]
    if site == "M2":
        return [(MCA_SUP if vessel.startswith("M2sup") else MCA_INF) + off]
    if site == "ACA":
        return [ACA + off]
    if site == "PCA":
        return [PCA + off]
    if site == "BA":
        codes = [POSTERIOR_FOSSA]
        if rng.random() < 0.4:
            codes += [PCA, PCA + RIGHT_OFFSET]
        return codes
    raise ValueError(site)


def territory_label(codes: list[int]) -> str:
    names = []
    for c in codes:
        n = TERRITORY_NAMES.get(c if c == POSTERIOR_FOSSA else c % RIGHT_OFFSET, "?")
        if n not in names:
            names.append(n)
    if {"MCA-deep", "MCA-superior", "MCA-inferior"} <= set(names):
        names = ["MCA"] + [n for n in names if not n.startswith("MCA")]
    return "+".join(names)


# infarct volume (world mL) per occlusion class: (median, log-sd, min, max); real cohort means 32 mL
# proximal, 5 mL distal. Lacunes are 3-15 mm across; under ~6 mm (0.15 mL) they vanish on the 2 mm field.
INFARCT_VOLUME_ML = {"proximal": (22.0, 0.75, 3.0, 58.0), "distal": (3.5, 0.8, 1.8, 30.0),
                     LACUNAR: (0.35, 0.5, 0.15, 1.5)}


def draw_volume(rng: np.random.Generator, klass: str, volumes: dict[str, tuple]) -> float:
    """A clipped log-normal volume for an occlusion class; ``volumes[klass] = (median, log-sd, min, max)``."""
    median, log_sd, lo, hi = volumes[klass]
    return float(np.clip(rng.lognormal(np.log(median), log_sd), lo, hi))


def target_volume_ml(klass: str, rng: np.random.Generator) -> float:
    """Infarct volume (world mL) to draw for an occlusion class."""
    return draw_volume(rng, klass, INFARCT_VOLUME_ML)


def make_infarct(atlas: Atlas, rng: np.random.Generator, codes: list[int], volume_ml_world: float,
                 jacobian: float, site: str) -> tuple[np.ndarray, int]:
    """Soft infarct field on the atlas 2 mm grid (iso-0.5 = boundary) and the number of pieces drawn.

    ``jacobian``: MNI volume per world volume of the patient's mapping.
    """
    allowed = np.isin(atlas.territory, codes) & (atlas.tissue2 > 0.5)
    field = np.zeros(atlas.territory.shape, np.float32)
    idx = np.argwhere(allowed)
    if len(idx) == 0:
        return field, 0
    lo = np.maximum(idx.min(0) - 4, 0)
    hi = np.minimum(idx.max(0) + 5, allowed.shape)
    sl = tuple(slice(a, b) for a, b in zip(lo, hi))
    al = allowed[sl]
    noise = ndi.gaussian_filter(rng.standard_normal(al.shape).astype(np.float32), 2.5)
    noise /= noise.std() + 1e-6
    n_vox_total = volume_ml_world * 1000.0 * jacobian / 8.0
    if site == LACUNAR:  # one perforating artery, one lacune
        n_pieces = 1
    elif site in ("ICA", "M1", "BA"):
        n_pieces = int(rng.choice([1, 2, 3, 4], p=[0.3, 0.3, 0.25, 0.15]))
    else:
        n_pieces = int(rng.choice([1, 2, 3], p=[0.45, 0.35, 0.2]))
    shares = np.sort(rng.dirichlet([2.5] + [0.8] * (n_pieces - 1)))[::-1]
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in al.shape], indexing="ij"), -1)
    chosen = np.zeros(al.shape, bool)
    cand = np.argwhere(al)
    deep_codes = [c for c in codes if c % RIGHT_OFFSET == MCA_DEEP and c != POSTERIOR_FOSSA]
    deep = np.isin(atlas.territory[sl], deep_codes) & al if deep_codes else None
    for i, sh in enumerate(shares):
        k = max(1, int(round(sh * n_vox_total)))
        pool = cand
        if i == 0 and deep is not None and deep.any() and rng.random() < 0.7:
            pool = np.argwhere(deep)
        seed = pool[int(rng.integers(len(pool)))].astype(np.float32)
        radius = max((3.0 * k / (4.0 * np.pi)) ** (1.0 / 3.0), 1.0)
        d = np.sqrt(((grid - seed) ** 2).sum(-1)) / radius
        score = -d + 0.35 * noise
        score[~al | chosen] = -np.inf
        flat = score.ravel()
        k = min(k, int(np.isfinite(flat).sum()))
        if k <= 0:
            break
        top = np.argpartition(-flat, k - 1)[:k]
        chosen.ravel()[top] = True
    # drop crumbs (< 6 voxels = 48 mm^3) that the noise may have cut off
    lab, n = ndi.label(chosen, structure=np.ones((3, 3, 3)))
    if n > 1:
        sizes = ndi.sum_labels(chosen, lab, index=np.arange(1, n + 1))
        small = np.flatnonzero(sizes < 6) + 1
        if len(small) < n:
            chosen[np.isin(lab, small)] = False
    soft = ndi.gaussian_filter(chosen.astype(np.float32), 0.55)
    # rescale so that the 0.5 iso-surface holds about the drawn volume
    field[sl] = np.clip(soft, 0.0, 1.0)
    return field, n_pieces
