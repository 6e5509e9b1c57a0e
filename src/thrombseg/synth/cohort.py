"""Cohort orchestration: plan (sites, contrast flags), generate subjects, write the BIDS-like tree."""
from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path

import numpy as np

from .. import __version__
from ..core.fs import atomic_dir
from ..core.io import write_json as write_plain_json
from ..core.sequences import LABELS, PRESENCE_COLUMN, SEQUENCES
from .atlas import get_atlas
from .centers import DEFAULT_CENTERS, validate_centers
from .io import write_json, write_tsv
from .montage import write_montage
from .pathology import LACUNAR, NEGATIVE_KIND_SHARES, NO_STROKE, RECANALISED
from .patient import SubjectTask, make_subject
from .vessels import SITE_SHARES

SHEET_COLUMNS = ["subject", "center", "split", *SEQUENCES, *LABELS, PRESENCE_COLUMN]
PARTICIPANT_COLUMNS = ["participant_id", "center", "age", "sex", "field_strength", "manufacturer", PRESENCE_COLUMN,
                       "negative_kind"]
LOW_CONTRAST_SHARE = 0.15
SIZES = ("demo", "paper")
PLAN_SALT = 99173  # fixed entry of the cohort plan's seed: changing it changes every cohort
NEGATIVE_SALT = 51407  # the negatives' own plan stream: share 0 leaves the site and contrast draws as they were


def subject_id(center: str, index: int, n_per_center: int) -> str:
    """BIDS-safe id of a center's ``index``-th (0-based) patient, e.g. ``ctrA01``."""
    width = max(2, len(str(n_per_center)))
    return f"{center}{index + 1:0{width}d}"


def subject_ids(n_per_center: int = 8, centers: list[dict] | None = None) -> dict[str, str]:
    """Subject -> center of the cohort :func:`generate_cohort` writes, without generating it.

    The workflow needs the ids at parse time to build a static DAG.
    """
    centers = DEFAULT_CENTERS if centers is None else centers
    return {subject_id(c["name"], i, n_per_center): c["name"] for c in centers for i in range(n_per_center)}


def _quota(shares: dict, n: int, rng: np.random.Generator) -> list[str]:
    """Exactly-proportioned (largest remainder) shuffled list of ``n`` draws."""
    keys = list(shares)
    raw = np.array([shares[k] for k in keys]) * n
    cnt = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - cnt), kind="stable")[: n - cnt.sum()]:
        cnt[i] += 1
    out = [k for k, c in zip(keys, cnt) for _ in range(c)]
    rng.shuffle(out)
    return out


def _negative_kinds(centers: list[dict], n_per_center: int, seed: int, negative_share: float) -> list[str]:
    """Per patient (cohort order) its negative kind, empty for a thrombus.

    Each center has round(share x n_per_center) negatives (its own ``negative_share`` wins over the
    cohort's), at random places; their kinds come in exact cohort quotas (``NEGATIVE_KIND_SHARES``).
    """
    counts = [int(np.floor(float(c.get("negative_share", negative_share)) * n_per_center + 0.5)) for c in centers]
    if not sum(counts):
        return [""] * (n_per_center * len(centers))
    rng = np.random.default_rng([seed, PLAN_SALT, NEGATIVE_SALT])
    negative = np.concatenate([np.isin(np.arange(n_per_center), rng.permutation(n_per_center)[:k]) for k in counts])
    kinds = iter(_quota(NEGATIVE_KIND_SHARES, sum(counts), rng))
    return [next(kinds) if neg else "" for neg in negative]


def plan_cohort(centers: list[dict], n_per_center: int, seed: int, size: str, outdir: Path,
                negative_share: float = 0.0) -> list[SubjectTask]:
    """One task per patient: negatives, occlusion sites in exact cohort shares, a share of low-contrast clots.

    Sites are shared out over the patients with an occlusion (a recanalised one included), low
    contrast over those with a clot; without negatives these draws are those of earlier versions.
    """
    negatives = _negative_kinds(centers, n_per_center, seed, negative_share)
    rng = np.random.default_rng([seed, PLAN_SALT])
    occluded = [k for k, kind in enumerate(negatives) if kind in ("", RECANALISED)]
    sites = dict(zip(occluded, _quota(SITE_SHARES, len(occluded), rng)))
    clots = np.flatnonzero([not kind for kind in negatives])
    low_contrast = set(clots[rng.permutation(len(clots))[:int(round(LOW_CONTRAST_SHARE * len(clots)))]].tolist())
    tasks = []
    for ci, c in enumerate(centers):
        for pi in range(n_per_center):
            k = len(tasks)
            tasks.append(SubjectTask(subject=subject_id(c["name"], pi, n_per_center), center=c, center_index=ci, index=pi,
                                     seed=int(seed), site=sites.get(k, ""), low_contrast=k in low_contrast, size=size,
                                     outdir=str(outdir), negative_kind=negatives[k]))
    return tasks


def thrombus_presence(n_per_center: int = 8, centers: list[dict] | None = None, seed: int = 0,
                      negative_share: float = 0.0) -> dict[str, bool]:
    """Subject -> whether :func:`generate_cohort` draws it a thrombus, without generating it.

    The workflow needs it at parse time to stratify the splits by presence.
    """
    centers = validate_centers(centers if centers is not None else DEFAULT_CENTERS)
    kinds = _negative_kinds(centers, n_per_center, seed, _check_share(negative_share))
    ids = [subject_id(c["name"], i, n_per_center) for c in centers for i in range(n_per_center)]
    return {sid: not kind for sid, kind in zip(ids, kinds)}


def _check_share(share: float) -> float:
    if not 0.0 <= float(share) <= 1.0:
        raise ValueError(f"negative_share must be in [0, 1], not {share!r}")
    return float(share)


def generate_cohort(outdir, n_per_center: int = 8, centers: list[dict] | None = None, seed: int = 0,
                    size: str = "demo", n_jobs: int | None = 1, overwrite: bool = False,
                    negative_share: float = 0.0) -> Path:
    """Generate the synthetic multi-center cohort and return the sample sheet ``outdir/subjects.tsv``.

    The cohort is written whole or not at all (a killed run leaves the previous cohort as it was).

    Args:
        outdir: output folder: new or empty, or (``overwrite``) a previous thrombseg output.
        n_per_center: patients per center.
        centers: list of center dicts (see ``thrombseg.synth.centers``); default ``DEFAULT_CENTERS``.
        seed: the whole cohort is a deterministic function of (centers, n_per_center, seed, size).
        size: ``"demo"`` (laptop-sized grids, e.g. SWI 1.0x1.0x2 mm) or ``"paper"`` (protocol grids,
            e.g. SWI 0.5x0.5x2 mm).
        n_jobs: worker processes (``None`` or ``0``: all cores). Output does not depend on it.
        negative_share: share of each center's patients without a thrombus (a center's own
            ``negative_share`` key wins): recanalised, lacunar or no stroke; their thrombus mask is
            empty and the sheet's ``thrombus_present`` says ``false``. A realistic share is 20-30 %;
            0 (the default) gives the cohort of earlier versions, image for image.
    """
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, not {size!r}")
    if n_per_center < 1:
        raise ValueError("n_per_center must be >= 1")
    negative_share = _check_share(negative_share)
    centers = validate_centers(centers if centers is not None else DEFAULT_CENTERS)
    with atomic_dir(outdir, overwrite, command="synth") as tmp:
        _write_cohort(tmp, centers, n_per_center, seed, size, n_jobs, negative_share)
    return Path(outdir) / "subjects.tsv"


def _write_cohort(outdir: Path, centers: list[dict], n_per_center: int, seed: int, size: str,
                  n_jobs: int | None, negative_share: float = 0.0) -> Path:
    """Every subject, then the dataset files, the QC montages and the sample sheet."""
    results = _generate_subjects(plan_cohort(centers, n_per_center, seed, size, outdir, negative_share), n_jobs)
    _write_dataset_files(outdir, centers, results, {"seed": seed, "n_per_center": n_per_center, "size": size,
                                                    "negative_share": negative_share})
    for c in centers:
        write_montage(c["name"], [r for r in results if r["row"]["center"] == c["name"]],
                      outdir / "qc" / f"montage_{c['name']}.png")
    return write_tsv([r["row"] for r in results], SHEET_COLUMNS, outdir / "subjects.tsv")


def _generate_subjects(tasks: list[SubjectTask], n_jobs: int | None) -> list[dict]:
    """Run :func:`make_subject` over the tasks, in ``n_jobs`` forked workers (``None``/0: all cores)."""
    get_atlas()  # build once here, shared by forked workers
    n_jobs = (os.cpu_count() or 1) if not n_jobs else int(n_jobs)
    n_jobs = max(1, min(n_jobs, len(tasks)))
    if n_jobs == 1:
        return [make_subject(t) for t in tasks]
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    with ctx.Pool(n_jobs) as pool:
        return pool.map(make_subject, tasks, chunksize=1)


def _write_dataset_files(outdir: Path, centers: list[dict], results: list[dict], parameters: dict) -> None:
    """BIDS dataset descriptions (raw and derivatives), participants table and sidecar, centers.json."""
    write_json({"Name": "thrombseg synthetic multi-center acute stroke cohort", "BIDSVersion": "1.9.0",
                "DatasetType": "raw", "License": "CC0",
                "GeneratedBy": [{"Name": "thrombseg.synth", "Version": __version__,
                                 "Description": "MNI152 2009 (nilearn) anatomy, random per-patient warps, "
                                                "analytic vessels, thrombus and infarct"}],
                "GeneratorParameters": {**parameters, "centers": [c["name"] for c in centers]}},
               outdir / "dataset_description.json")
    for sub in ("labels", "truth"):
        write_json({"Name": f"thrombseg synthetic cohort {sub}", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
                    "GeneratedBy": [{"Name": "thrombseg.synth", "Version": __version__}]},
                   outdir / "derivatives" / sub / "dataset_description.json")
    write_tsv([r["participant"] for r in results], PARTICIPANT_COLUMNS, outdir / "participants.tsv")
    write_json({"center": {"Description": "acquisition center (site)"}, "age": {"Units": "years"},
                "sex": {"Levels": {"F": "female", "M": "male"}},
                "field_strength": {"Units": "T"}, "manufacturer": {"Description": "synthetic vendor"},
                PRESENCE_COLUMN: {"Description": "whether the images show a thrombus (false: its mask is empty)"},
                "negative_kind": {"Description": "why there is no thrombus; empty when there is one",
                                  "Levels": {RECANALISED: "infarct of an occlusion that has reopened",
                                             LACUNAR: "small deep infarct, no visible clot",
                                             NO_STROKE: "no infarct, no clot (stroke mimic)"}}},
               outdir / "participants.json")
    write_plain_json(centers, outdir / "centers.json", indent=1)  # as given: floats not rounded
