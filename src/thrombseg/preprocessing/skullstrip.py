"""Skull stripping behind one call, ``skull_strip(image, backend)``; three backends.

``deepbet``  offline CNN whose weights ship inside the deepbet wheel (T1-trained; measured on the
             other contrasts in ``benchmarks/preprocess.py``).
``ants``     offline, contrast-agnostic: the MNI152 2009 template shipped with nilearn is registered
             to the patient with a Mattes mutual-information metric (rigid, then affine and a short
             SyN both restricted to a dilated brain neighbourhood) and its brain mask is warped back.
``hdbet``    HD-BET v2 (nnU-Net). Weights come from a configured folder, ``$THROMBSEG_HDBET_WEIGHTS``
             or HD-BET's default folder (``~/hd-bet_params/release_2.0.0``); they are never
             downloaded at run time. :func:`download_hdbet_weights` is the explicit, opt-in download
             (the workflow's ``download_hdbet_weights`` rule, run once on a machine with internet).

Every backend returns a binary mask on the input image's grid, post-processed identically: the
largest 6-connected component with its holes filled.

Each backend's library (deepbet, nilearn's template, HD-BET, nnU-Net and torch) is imported when
that backend first runs, deliberately: a run loads only the heavy model code it uses, and the
workflow's DAG parse (which reads :func:`hdbet_default_folder`) none of it.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import warnings
from functools import lru_cache
from pathlib import Path

import ants
import cc3d
import numpy as np
from scipy import ndimage

from ._io import PreprocessingError, from_nibabel_arrays, like, load_image, set_threads, to_nibabel

BACKENDS: tuple[str, ...] = ("deepbet", "ants", "hdbet")
OFFLINE_BACKENDS: tuple[str, ...] = ("deepbet", "ants")
#: The best measured offline backend (benchmarks/preprocess.py; docs/decisions.md).
DEFAULT_BACKEND = "ants"

HDBET_CONFIG_KEY = "preprocess.skullstrip.hdbet_weights"
HDBET_ENV = "THROMBSEG_HDBET_WEIGHTS"
HDBET_DOWNLOAD_RULE = "download_hdbet_weights"
HDBET_CHECKPOINT = Path("fold_all") / "checkpoint_final.pth"


class HDBetWeightsMissing(PreprocessingError, FileNotFoundError):
    """HD-BET's weights are not where they were looked for (message names every option)."""


# --------------------------------------------------------------------------------------------------
# HD-BET weights
# --------------------------------------------------------------------------------------------------
def hdbet_default_folder() -> Path:
    """HD-BET's own default parameter folder (read from HD_BET.paths at call time)."""
    from HD_BET import paths

    return Path(paths.folder_with_parameter_files)


def _is_model_folder(folder: Path) -> bool:
    return (folder / HDBET_CHECKPOINT).is_file() and (folder / "plans.json").is_file() \
        and (folder / "dataset.json").is_file()


def hdbet_weights_folder(configured: str | Path | None = None) -> Path:
    """The folder holding HD-BET's nnU-Net model (dataset.json, plans.json, fold_all/checkpoint_final.pth).

    Looked for, in order: ``configured`` (config ``preprocess.skullstrip.hdbet_weights``), the
    environment variable ``THROMBSEG_HDBET_WEIGHTS``, HD-BET's default folder. Never downloads.

    Raises:
        HDBetWeightsMissing: with a message naming the config option and the opt-in download rule.
    """
    tried: list[Path] = []
    for cand in (configured, os.environ.get(HDBET_ENV) or None, hdbet_default_folder()):
        if cand is None or str(cand) == "":
            continue
        cand = Path(cand).expanduser()
        tried.append(cand)
        if _is_model_folder(cand):
            return cand
        # a release zip unpacked one level too deep is a common mistake: accept it
        for sub in sorted(cand.glob("*/")) if cand.is_dir() else []:
            if _is_model_folder(sub):
                return sub
    looked = "; ".join(f"{p} ({'empty or incomplete' if p.exists() else 'does not exist'})" for p in tried)
    raise HDBetWeightsMissing(
        "HD-BET weights not found (need dataset.json, plans.json and fold_all/checkpoint_final.pth); "
        f"looked in: {looked}. Either set the config option '{HDBET_CONFIG_KEY}' (or ${HDBET_ENV}) to a "
        f"folder holding them, or run the opt-in download rule once on a machine with internet: "
        f"`snakemake {HDBET_DOWNLOAD_RULE} --cores 1` "
        f"(or `thrombseg preprocess download-hdbet-weights [FOLDER]`). "
        f"Offline alternatives: skull-strip backend 'deepbet' or 'ants'."
    )


def download_hdbet_weights(dest: str | Path | None = None) -> Path:
    """Opt-in download of HD-BET's weights into ``dest`` (default: HD-BET's default folder).

    The only function of this package that touches the network. Returns the model folder.
    """
    from HD_BET import checkpoint_download, paths

    dest = Path(dest).expanduser() if dest else hdbet_default_folder()
    if _is_model_folder(dest):
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    old = (paths.folder_with_parameter_files, checkpoint_download.folder_with_parameter_files)
    try:
        paths.folder_with_parameter_files = str(dest)
        checkpoint_download.folder_with_parameter_files = str(dest)
        checkpoint_download.maybe_download_parameters()
    finally:
        paths.folder_with_parameter_files, checkpoint_download.folder_with_parameter_files = old
    return hdbet_weights_folder(dest)


def _import_hdbet_prediction():
    """Import HD_BET.hd_bet_prediction without letting it hijack sys.stdout (it resets it)."""
    saved = sys.stdout
    try:
        from HD_BET import hd_bet_prediction
    finally:
        sys.stdout = saved
    return hd_bet_prediction


@lru_cache(maxsize=2)
def _hdbet_predictor(folder: str, device: str, tta: bool):
    import torch

    hbp = _import_hdbet_prediction()
    hbp.folder_with_parameter_files = folder  # the API reads this module global
    threads = torch.get_num_threads()
    predictor = hbp.get_hdbet_predictor(use_tta=tta, device=torch.device(device), verbose=False)
    torch.set_num_threads(threads)  # get_hdbet_predictor grabs every core on cpu
    return predictor


def _mask_hdbet(img: ants.ANTsImage, *, weights=None, device="cpu", tta=False) -> np.ndarray:
    folder = hdbet_weights_folder(weights)  # the clear error happens here, before any heavy import
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    predictor = _hdbet_predictor(str(folder), device, bool(tta))
    with tempfile.TemporaryDirectory(prefix="thrombseg-hdbet-") as td:
        path = Path(td) / "img_0000.nii.gz"
        ants.image_write(img, str(path))
        data, props = SimpleITKIO().read_images([str(path)])  # exactly as HD-BET's file path reads it
    seg = predictor.predict_single_npy_array(data, {"spacing": props["spacing"]}, None, None, False)
    seg = np.asarray(seg)
    if seg.ndim == 4:
        seg = seg[0]
    return seg.transpose(2, 1, 0) > 0  # SimpleITK (z, y, x) -> ANTs (x, y, z)


# --------------------------------------------------------------------------------------------------
# deepbet
# --------------------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _deepbet_model():
    from deepbet import BrainExtraction

    return BrainExtraction(no_gpu=True)


def _mask_deepbet(img: ants.ANTsImage, *, threshold: float = 0.5) -> np.ndarray:
    nii = to_nibabel(img)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, mask, _ = _deepbet_model().run(nii, threshold=threshold)
    return np.asarray(mask.dataobj) > 0


# --------------------------------------------------------------------------------------------------
# ants (template registration)
# --------------------------------------------------------------------------------------------------
@lru_cache(maxsize=2)
def mni_template(resolution: int = 2) -> tuple[ants.ANTsImage, ants.ANTsImage]:
    """(T1 template, brain mask) of MNI152 2009 shipped in the nilearn wheel (never downloaded)."""
    from nilearn import datasets

    t = datasets.load_mni152_template(resolution=resolution)
    m = datasets.load_mni152_brain_mask(resolution=resolution)
    tpl = from_nibabel_arrays(np.asarray(t.dataobj, np.float32), t.affine)
    msk = from_nibabel_arrays((np.asarray(m.dataobj) > 0).astype(np.float32), m.affine)
    return tpl, msk


def registration_image(img: ants.ANTsImage, spacing: float = 2.0, clip=(0.5, 99.5)) -> ants.ANTsImage:
    """Copy of ``img`` for registration: anti-aliased, resampled to >= ``spacing`` mm, clipped to [0, 1]."""
    sp = np.asarray(img.spacing, float)
    out = img
    if spacing and (sp < spacing - 1e-3).any():
        target = np.maximum(sp, spacing)
        sigma = np.sqrt(np.maximum(target ** 2 - sp ** 2, 0)) / 2.355
        out = ants.smooth_image(img, sigma.tolist(), sigma_in_physical_coordinates=True)
        out = ants.resample_image(out, tuple(target.tolist()), use_voxels=False, interp_type=0)
    a = out.numpy()
    fg = a[a > 0] if (a > 0).sum() > 100 else a.ravel()
    lo, hi = np.percentile(fg, clip)
    if hi <= lo:
        hi = lo + 1.0
    return like(out, np.clip((a - lo) / (hi - lo), 0, 1))


def _dilated(mask: ants.ANTsImage, mm: float) -> ants.ANTsImage:
    r = max(1, int(round(mm / float(np.mean(mask.spacing)))))
    return ants.morphology(ants.threshold_image(mask, 0.5, 1e9), "dilate", r, mtype="binary")


def _mask_ants(img: ants.ANTsImage, *, refine: bool = True, resolution: int = 2, seed: int = 42) -> np.ndarray:
    tpl, tmask = mni_template(resolution)
    fx = registration_image(img, 2.0)
    mv = registration_image(tpl, 2.0)
    lin = dict(aff_metric="mattes", aff_sampling=32, aff_random_sampling_rate=0.25,
               aff_iterations=(100, 50, 25), aff_shrink_factors=(4, 2, 1), aff_smoothing_sigmas=(2, 1, 0),
               random_seed=seed)
    # rigid first: a brain-only template cannot inflate onto a skull-on head without a scale term
    # (the rigid start stops at 4 mm: its full-resolution level costs 10 s and the affine redoes it)
    rig = ants.registration(fx, mv, type_of_transform="Rigid", **{**lin, "aff_iterations": (100, 50),
                                                                  "aff_shrink_factors": (4, 2),
                                                                  "aff_smoothing_sigmas": (2, 1)})
    tx = rig["fwdtransforms"]
    around = _dilated(ants.apply_transforms(fx, tmask, tx, interpolator="linear"), 10.0)
    aff = ants.registration(fx, mv, type_of_transform="Affine", initial_transform=tx[0], mask=around, **lin)
    tx = aff["fwdtransforms"]
    if refine:
        around = _dilated(ants.apply_transforms(fx, tmask, tx, interpolator="linear"), 6.0)
        syn = ants.registration(fx, mv, type_of_transform="SyNOnly", initial_transform=tx[0], mask=around,
                                syn_metric="mattes", syn_sampling=32, reg_iterations=(40, 20, 0),
                                flow_sigma=3, total_sigma=0, random_seed=seed)
        tx = syn["fwdtransforms"]
    warped = ants.apply_transforms(img, tmask, tx, interpolator="linear")
    for r in (rig, aff, *([syn] if refine else [])):
        for f in set(r["fwdtransforms"] + r["invtransforms"]):
            if os.path.exists(f) and f.startswith(tempfile.gettempdir()):
                os.remove(f)
    return warped.numpy() > 0.5


# --------------------------------------------------------------------------------------------------
# public entry
# --------------------------------------------------------------------------------------------------
def postprocess_mask(mask: np.ndarray) -> np.ndarray:
    """Largest 6-connected component, holes filled (slice-free, 3-D)."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        return mask
    lab = cc3d.connected_components(mask.astype(np.uint8), connectivity=6)
    counts = np.bincount(lab.ravel())
    counts[0] = 0
    mask = lab == counts.argmax()
    return ndimage.binary_fill_holes(mask)


def _otsu(values: np.ndarray, bins: int = 256) -> float:
    hist, edges = np.histogram(values, bins=bins)
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centers)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(centers[int(np.argmax(between[:-1]))])


def tighten_mask(img: ants.ANTsImage, mask: np.ndarray, *, shell_mm: float = 3.0, band_mm: float = 6.0,
                 tail: float = 5.0) -> np.ndarray:
    """Contrast-agnostic trim of the outer CSF/skull rim that every backend leaves on the mask.

    In the outer ``shell_mm`` of the mask, two classes are split by Otsu (parenchyma vs CSF, whichever
    is brighter); a shell voxel stays when it is on the parenchyma side, i.e. the side of the median
    of the band ``shell_mm..shell_mm+band_mm`` inside, and not beyond that band's ``tail``-th
    percentile on the other side (partial volume with dark bone). Then a one-voxel opening, the
    largest component and hole filling. Works for bright-CSF (SWI, T2*, T2, ADC) and dark-CSF
    (DWI, FLAIR, T1) contrasts alike.
    """
    full = np.asarray(mask, bool)
    if not full.any():
        return full
    idx = np.argwhere(full)
    lo = np.maximum(idx.min(axis=0) - 2, 0)
    hi = np.minimum(idx.max(axis=0) + 3, full.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    mask = full[box]
    a = img.numpy()[box]
    dist = ndimage.distance_transform_edt(mask, sampling=img.spacing)
    shell = mask & (dist <= shell_mm)
    band = mask & (dist > shell_mm) & (dist <= shell_mm + band_mm)
    if shell.sum() < 100 or band.sum() < 100:
        return full
    bv = a[band]
    level = float(np.median(bv))
    thr = _otsu(a[shell])
    if level < thr:
        keep = shell & (a < thr) & (a >= np.percentile(bv, tail))
    else:
        keep = shell & (a >= thr) & (a <= np.percentile(bv, 100 - tail))
    new = (mask & ~shell) | keep
    new = ndimage.binary_opening(new, iterations=1)
    new = postprocess_mask(new)
    # never let the trim eat the mask (e.g. a contrast where the shell is parenchyma): keep >= 80 %
    if new.sum() < 0.8 * mask.sum():
        return full
    out = np.zeros_like(full)
    out[box] = new
    return out


def skull_strip(image, backend: str = DEFAULT_BACKEND, *, hdbet_weights: str | Path | None = None,
                device: str = "cpu", tta: bool = False, ants_refine: bool = True, tighten: bool = True,
                template_resolution: int = 2, threads: int | None = None, deterministic: bool = True,
                seed: int = 42, return_info: bool = False):
    """Brain mask of ``image`` (path or ANTs image) with ``backend``; binary float ANTs image on its grid.

    Args:
        backend: ``deepbet`` | ``ants`` | ``hdbet``.
        hdbet_weights: HD-BET model folder (see :func:`hdbet_weights_folder`).
        device, tta: HD-BET device (``cpu`` | ``cuda``) and test-time mirroring (off: 8x faster on CPU).
        ants_refine: ``ants`` backend: add the masked SyN refinement after the affine.
        tighten: trim the outer CSF/skull rim (:func:`tighten_mask`), for every backend.
        template_resolution: ``ants`` backend: MNI152 template at 1 or 2 mm.
        threads, deterministic: see :func:`~thrombseg.preprocessing._io.set_threads` (ITK single-threaded
            by default, so the template registration repeats exactly).
        return_info: also return ``{"backend", "seconds", "volume_ml"}``.

    Raises:
        PreprocessingError: bad image or unknown backend; HDBetWeightsMissing when HD-BET has no weights.
    """
    if backend not in BACKENDS:
        raise PreprocessingError(f"unknown skull-strip backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    img = image if isinstance(image, ants.ANTsImage) else load_image(image, what="skull-strip input")
    set_threads(threads, deterministic)
    t0 = time.perf_counter()
    if backend == "deepbet":
        raw = _mask_deepbet(img)
    elif backend == "ants":
        raw = _mask_ants(img, refine=ants_refine, resolution=template_resolution, seed=seed)
    else:
        raw = _mask_hdbet(img, weights=hdbet_weights, device=device, tta=tta)
    mask = postprocess_mask(raw)
    if tighten and mask.any():
        mask = tighten_mask(img, mask)
    if not mask.any():
        src = image if not isinstance(image, ants.ANTsImage) else "image"
        raise PreprocessingError(f"{src}: skull stripping ({backend}) found no brain")
    out = like(img, mask.astype(np.float32))
    if return_info:
        info = {"backend": backend, "seconds": round(time.perf_counter() - t0, 3),
                "volume_ml": float(mask.sum() * np.prod(img.spacing) / 1000.0)}
        return out, info
    return out
