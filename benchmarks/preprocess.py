"""Benchmark of the preprocessing stage (issue 3 "Done when" tables).

    .venv/bin/python benchmarks/preprocess.py [--out DIR] [--n-per-center 3] [--centers ctrA ...]
        [--seed 0] [--synth DIR_WITH_subjects.tsv] [--real ../shared/data/real] [--backends deepbet ants]
        [--quick]

Builds what it needs: a synthetic cohort of ``--n-per-center`` patients per center (kept under
``--out``, default ``results/benchmarks/preprocess/``, as ``synth-n<N>-seed<S>-<centers>`` and reused
by the next run of the same size) unless ``--synth`` names one. The real public cases (``--real``,
beside the dev checkout) are optional: without them (a fresh clone) their rows are left out.

Prints (and writes as TSV under --out):
 1. brain-mask Dice against the synthetic generator's true brain, per offline backend and center, on
    each center's reference sequence (the pipeline's final "brainmask" and the backend's raw mask),
    plus the same backends on the other contrasts (DWI, FLAIR) inside the reference's field of view;
 1b. the same backends on real skull-stripped public cases against the provider's brain (nonzero);
 2. registration error (median / p95 mm over brain voxels) after known random rigid motions
    (<= 15 deg, <= 10 mm, applied to the moving image's header, so exact and oblique): synthetic
    DWI/FLAIR -> reference, real MS T2/T1/FLAIR -> FLAIR at 1 mm;
 3. label volume after moving to the reference grid (volume-preserving mover vs plain 0.5 threshold);
 4. seconds per patient per step of ``preprocess_subject`` with the default backend (synthetic
    patients and the real MS patient with 4 sequences at 1 mm).
Use 2 threads (ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=2) on the shared machine.

``--quick`` runs the same code on less: one patient in each of two centers (ctrA: SWI, 3 T; ctrB:
T2*-GRE, 1.5 T), the reference sequence only in table 1, one motion per pair in table 2, one patient
(the one with the fewest sequences) through ``preprocess_subject`` in table 4, and no real cases
unless ``--real`` is given (then 2 in table 1b, one pair in table 2, none in table 4).

Run time on 2 CPU cores (AMD EPYC, shared machine): ``--quick`` 90 s on idle cores, 150 s with another
job on them (measured). Default (12 patients, with the real cases): about 25 minutes, estimated from
the quick run's per-step times (tables 1 and 4 about 6-7 minutes each, 1b and 2 about 4-5 each), not
run to the end here; a fresh clone has no real cases, about 17 minutes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import ants  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from _common import header, shown, write_tsv  # noqa: E402

from thrombseg.core.sequences import SEQUENCES  # noqa: E402
from thrombseg.ingest import ingest_from_sheet  # noqa: E402
from thrombseg.preprocessing import _io  # noqa: E402
from thrombseg.preprocessing import registration as R  # noqa: E402
from thrombseg.preprocessing import skullstrip as S  # noqa: E402
from thrombseg.preprocessing.pipeline import STEPS, choose_reference, preprocess_subject  # noqa: E402
from thrombseg.preprocessing.qc import write_center_qc  # noqa: E402
from thrombseg.preprocessing.settings import DEFAULT_CONFIG  # noqa: E402
from thrombseg.synth import generate_cohort  # noqa: E402
from thrombseg.synth import motion as M  # noqa: E402
from thrombseg.synth.centers import DEFAULT_CENTERS  # noqa: E402


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = a.sum() + b.sum()
    return float(2 * (a & b).sum() / s) if s else 1.0


def show(title: str, df: pd.DataFrame, out: Path, name: str) -> None:
    print(f"\n## {title}\n")
    print(df.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    write_tsv(df, out / f"{name}.tsv")
    sys.stdout.flush()


# --------------------------------------------------------------------------------------------------
def synthetic_cohort(args) -> tuple[pd.DataFrame, Path, Path]:
    if args.synth:
        raw = Path(args.synth)
    else:
        centers = [c for c in DEFAULT_CENTERS if c["name"] in args.centers] if args.centers else DEFAULT_CENTERS
        raw = args.out / "-".join([f"synth-n{args.n_per_center}-seed{args.seed}", *(c["name"] for c in centers)])
        if not (raw / "subjects.tsv").is_file():
            t = time.perf_counter()
            generate_cohort(raw, n_per_center=args.n_per_center, centers=centers, seed=args.seed, size="demo",
                            n_jobs=1)
            print(f"generated synthetic cohort in {time.perf_counter() - t:.0f} s")
    sheet = pd.read_csv(raw / "subjects.tsv", sep="\t", dtype=str).fillna("")
    ing = args.out / f"ingest-{raw.name}"  # one per cohort: a quick run never reuses a full run's
    for sub in sheet["subject"]:
        if not (ing / sub / f"{sub}_ingest.json").is_file():
            ingest_from_sheet(raw / "subjects.tsv", sub, ing / sub)
    return sheet, raw, ing


def truth_brain(raw: Path, sub: str) -> ants.ANTsImage:
    return _io.load_image(raw / "derivatives" / "truth" / f"sub-{sub}" / f"sub-{sub}_desc-brain_mask.nii.gz",
                          allow_constant=True)


def table_dice(sheet, raw, ing, backends, out, quick=False):
    rows, contrast_rows = [], []
    for sub, center in zip(sheet["subject"], sheet["center"]):
        seqs = [s for s in SEQUENCES if (ing / sub / f"{sub}_{s}.nii.gz").is_file()]
        ref = choose_reference(seqs)
        truth = truth_brain(raw, sub)
        fov = _io.like(truth, np.ones(truth.shape, np.float32))
        for seq in [ref] + ([] if quick else [s for s in ("dwi", "flair") if s in seqs]):
            img = _io.load_image(ing / sub / f"{sub}_{seq}.nii.gz")
            t = R.resample(truth, img, None, "linear").numpy() >= 0.5
            inside = R.resample(fov, img, None, "nearestneighbor").numpy() > 0.5
            for b in backends:
                t0 = time.perf_counter()
                rawm = S.skull_strip(img, b, tighten=False).numpy() > 0.5
                sec = time.perf_counter() - t0
                tight = S.tighten_mask(img, rawm)
                d = {"center": center, "subject": sub, "sequence": seq, "backend": b,
                     "dice_brainmask": dice(tight & inside, t & inside), "dice_raw": dice(rawm & inside, t & inside),
                     "vol_ratio": float((tight & inside).sum() / max((t & inside).sum(), 1)), "seconds": sec}
                (rows if seq == ref else contrast_rows).append(d)
        print(f"  dice: {sub} done", file=sys.stderr, flush=True)
    df = pd.DataFrame(rows)
    agg = (df.groupby(["center", "backend"])
             .agg(reference=("sequence", "first"), n=("subject", "count"),
                  dice_mean=("dice_brainmask", "mean"), dice_min=("dice_brainmask", "min"),
                  dice_raw_mean=("dice_raw", "mean"), vol_ratio=("vol_ratio", "mean"), seconds=("seconds", "mean"))
             .reset_index())
    write_tsv(df, out / "dice_per_subject.tsv")
    show("1. Brain-mask Dice vs the synthetic true brain, reference sequence (brainmask = tightened; raw = backend)",
         agg, out, "dice_reference")
    if contrast_rows:
        dc = pd.DataFrame(contrast_rows)
        aggc = (dc.groupby(["sequence", "backend"])
                  .agg(n=("subject", "count"), dice_mean=("dice_brainmask", "mean"), dice_min=("dice_brainmask", "min"),
                       dice_raw_mean=("dice_raw", "mean"), seconds=("seconds", "mean")).reset_index())
        show("1a. Same backends on the other contrasts (inside the reference's field of view)", aggc, out,
             "dice_contrasts")
    return agg


def table_dice_real(real: Path, backends, out, quick=False):
    cases = [("ISLES22 DWI (2 mm)", "isles22/sub-strokecase0001/sub-strokecase0001_ses-0001_dwi.nii.gz"),
             ("ISLES22 ADC (2 mm)", "isles22/sub-strokecase0001/sub-strokecase0001_ses-0001_adc.nii.gz")]
    for p in ("patient07", "patient19"):
        for s in ("FLAIR", "T2", "T1"):
            cases.append((f"MS {p} {s}", f"ms_lesjak2017/{p}/{s}.nii.gz"))
    rows = []
    cases = cases[:2] if quick else cases
    for name, rel in cases:
        if not (real / rel).is_file():
            continue
        img = _io.load_image(real / rel)
        nz = img.numpy() > 0
        for b in backends:
            t0 = time.perf_counter()
            rawm = S.skull_strip(img, b, tighten=False).numpy() > 0.5
            sec = time.perf_counter() - t0
            tight = S.tighten_mask(img, rawm)
            rows.append({"case": name, "backend": b, "dice_brainmask": dice(tight, nz), "dice_raw": dice(rawm, nz),
                         "seconds": sec})
    if rows:
        df = pd.DataFrame(rows).pivot(index="case", columns="backend", values=["dice_brainmask", "dice_raw", "seconds"])
        df.columns = [f"{a}:{b}" for a, b in df.columns]
        show("1b. Real skull-stripped public cases: Dice vs the provider's brain (nonzero voxels)",
             df.reset_index(), out, "dice_real")


def _reg_mask(fixed, brain: np.ndarray):
    """The pipeline's fixed mask: the brain dilated by registration.brain_mask_dilation_mm (10 mm)."""
    mm = DEFAULT_CONFIG["registration"]["brain_mask_dilation_mm"]
    rad = max(1, int(round(mm / float(np.mean(fixed.spacing)))))
    return ants.morphology(_io.like(fixed, brain.astype(np.float32)), "dilate", rad, mtype="binary")


def _motion_error(fixed, moving, mask, pts, rng, n):
    errs, base = [], None
    reg0 = R.register(fixed, moving, fixed_mask=mask)
    base = float(np.median(M.registration_error_mm(reg0.matrix, np.eye(4), pts)))
    for _ in range(n):
        s = M.random_rigid(rng, 15.0, 10.0, center=pts.mean(axis=0))
        reg = R.register(fixed, M.move_header(moving, s), fixed_mask=mask)  # exact motion, oblique header
        e = M.registration_error_mm(reg.matrix, s, pts)
        ang, _ = M.motion_magnitude(s)
        errs.append((float(np.median(e)), float(np.percentile(e, 95)), ang, reg.seconds))
    return base, errs


def table_registration(sheet, ing, raw, real, out, n_motions=2, quick=False):
    rows = []
    rng = np.random.default_rng(2024)
    for sub, center in zip(sheet["subject"], sheet["center"]):
        seqs = [s for s in SEQUENCES if (ing / sub / f"{sub}_{s}.nii.gz").is_file()]
        ref = choose_reference(seqs)
        fixed = _io.load_image(ing / sub / f"{sub}_{ref}.nii.gz")
        tb = R.resample(truth_brain(raw, sub), fixed, None, "linear").numpy() >= 0.5
        pts = R.physical_points(fixed, tb, 4000)
        mask = _reg_mask(fixed, tb)
        for seq in [s for s in ("dwi", "flair", "t1") if s in seqs and s != ref]:
            moving = _io.load_image(ing / sub / f"{sub}_{seq}.nii.gz")
            base, errs = _motion_error(fixed, moving, mask, pts, rng, 1 if quick else n_motions)
            for med, p95, ang, sec in errs:
                rows.append({"data": f"synthetic {center}", "pair": f"{seq}->{ref}", "median_mm": med,
                             "p95_mm": p95, "angle_deg": ang, "zero_motion_median_mm": base, "seconds": sec})
    ms = [(p, m) for p in ("patient07", "patient19") for m in ("T2", "T1", "FLAIR")] if real else []
    for p, m in ms[: 1 if quick else 6]:
        d = real / "ms_lesjak2017" / p
        if not (d / "FLAIR.nii.gz").is_file():
            continue
        fixed = _io.load_image(d / "FLAIR.nii.gz")
        brain = fixed.numpy() > 0
        pts = R.physical_points(fixed, brain, 4000)
        base, errs = _motion_error(fixed, _io.load_image(d / f"{m}.nii.gz"), _reg_mask(fixed, brain), pts, rng,
                                   1 if quick else n_motions)
        for med, p95, ang, sec in errs:
            rows.append({"data": f"real MS {p} 1 mm", "pair": f"{m.lower()}->flair", "median_mm": med,
                         "p95_mm": p95, "angle_deg": ang, "zero_motion_median_mm": base, "seconds": sec})
    df = pd.DataFrame(rows)
    write_tsv(df, out / "registration_per_motion.tsv")
    agg = (df.groupby(["data", "pair"])
             .agg(n=("median_mm", "count"), median_mm=("median_mm", "median"), worst_median_mm=("median_mm", "max"),
                  p95_mm=("p95_mm", "median"), max_angle_deg=("angle_deg", "max"),
                  zero_motion_median_mm=("zero_motion_median_mm", "median"), seconds=("seconds", "mean"))
             .reset_index())
    show("2. Registration error after a known random rigid motion (<=15 deg, <=10 mm, applied to the moving "
         "image's header: exact, oblique result), fixed mask = brain dilated 10 mm as in the pipeline; "
         "zero_motion = error of the unmoved pair (scanner alignment as truth)",
         agg, out, "registration")


def table_labels(sheet, ing, out, pre_metas):
    rows = []
    rng = np.random.default_rng(7)
    iso = None
    for sub, center in zip(sheet["subject"], sheet["center"]):
        p = ing / sub / f"{sub}_thrombus.nii.gz"
        if not p.is_file():
            continue
        lab = _io.load_image(p, allow_constant=True)
        n = int((lab.numpy() > 0.5).sum())
        seqs = [s for s in SEQUENCES if (ing / sub / f"{sub}_{s}.nii.gz").is_file()]
        targets = {}
        if "dwi" in seqs:
            targets["coarse DWI grid (5-6 mm slices; +-1/2 voxel quantisation), scanner aligned"] = (
                _io.load_image(ing / sub / f"{sub}_dwi.nii.gz"), np.eye(4))
        iso = ants_iso(lab)
        c = R.physical_points(lab, lab.numpy() > 0.5).mean(axis=0)
        for k in range(3):
            targets[f"1 mm iso, random rigid {k}"] = (iso, M.random_rigid(rng, 15, 10, center=c))
        for name, (grid, m) in targets.items():
            _, a = R.move_label(lab, grid, m, return_info=True)
            plain, b = R.move_label(lab, grid, m, preserve_volume=False, return_info=True)
            rows.append({"center": center, "subject": sub, "target": name.rsplit(",", 1)[0], "voxels": n,
                         "ratio_preserving": a["volume_ratio"], "ratio_threshold_0.5": b["volume_ratio"],
                         "lost_threshold_0.5": b["lost"], "lost_preserving": a["lost"]})
    for meta in pre_metas:
        for name, info in meta.get("labels", {}).items():
            rows.append({"center": meta["center"], "subject": meta["subject"], "target": f"pipeline ({name})",
                         "voxels": None, "ratio_preserving": info["volume_ratio"], "ratio_threshold_0.5": None,
                         "lost_threshold_0.5": None, "lost_preserving": info["lost"]})
    df = pd.DataFrame(rows)
    write_tsv(df, out / "labels_per_subject.tsv")
    agg = (df.groupby("target")
             .agg(n=("subject", "count"), min_voxels=("voxels", "min"),
                  preserving_min=("ratio_preserving", "min"), preserving_max=("ratio_preserving", "max"),
                  thr05_min=("ratio_threshold_0.5", "min"), thr05_max=("ratio_threshold_0.5", "max"),
                  thr05_lost=("lost_threshold_0.5", "sum"), preserving_lost=("lost_preserving", "sum"))
             .reset_index())
    show("3. Label volume after moving (ratio moved/original; thrombus on the susceptibility grid, "
         "pipeline rows = thrombus and infarct through preprocess_subject)", agg, out, "labels")


def ants_iso(img):
    return ants.resample_image(img, (1.0, 1.0, 1.0), use_voxels=False, interp_type=1)


def run_pipeline(sheet, ing, out, real, quick=False):
    metas = []
    pre = out / "preprocessed"
    shutil.rmtree(pre, ignore_errors=True)  # this run's patients only (the QC tables glob the folder)
    S.skull_strip(_io.load_image(next(ing.glob("*/*_dwi.nii.gz"))), S.DEFAULT_BACKEND)  # warm-up (model load)
    subjects = list(zip(sheet["subject"], sheet["center"]))
    if quick:  # the patient with the fewest sequences
        subjects = [min(subjects, key=lambda sc: len(list((ing / sc[0]).glob(f"{sc[0]}_*.nii.gz"))))]
    for sub, _center in subjects:
        metas.append(preprocess_subject(ing, sub, pre, {"threads": 2}))
        print(f"  pipeline: {sub} {metas[-1]['timings_s']['total']:.1f} s", file=sys.stderr, flush=True)
    d = real / "ms_lesjak2017" / "patient07" if real else None
    ms_meta = None
    if d is not None and d.is_dir() and not quick:
        msi = out / "ingest_real" / "ms07"
        msi.mkdir(parents=True, exist_ok=True)
        for k, f in (("t2star", "T2"), ("flair", "FLAIR"), ("t1", "T1"), ("dwi", "T1POST")):
            if not (msi / f"ms07_{k}.nii.gz").is_file():
                _io.atomic_write_nifti(_io.load_image(d / f"{f}.nii.gz"), msi / f"ms07_{k}.nii.gz")
        ms_meta = preprocess_subject(out / "ingest_real", "ms07", pre, {"threads": 2})
        ms_meta["center"] = "real MS (4 seq, 1 mm)"
    rows = []
    for m in metas + ([ms_meta] if ms_meta else []):
        r = {"center": m["center"], "subject": m["subject"], "n_seq": len(m["sequences"]),
             "grid": "x".join(map(str, m["grid"]["shape"]))}
        r.update({k: v for k, v in m["timings_s"].items()})
        rows.append(r)
    df = pd.DataFrame(rows).fillna(0.0)
    write_tsv(df, out / "timings_per_subject.tsv", "%.3f")
    steps = [c for c in (*STEPS, "total") if c in df.columns]
    agg = df.groupby("center")[["n_seq"] + steps].mean().reset_index()
    agg.insert(1, "n", df.groupby("center").size().values)
    show(f"4. Seconds per patient per step, preprocess_subject, default backend '{S.DEFAULT_BACKEND}', 2 threads",
         agg, out, "timings")
    for center in sorted({m["center"] for m in metas}):
        write_center_qc(sorted(pre.glob("*/*_preproc.json")), out / f"qc_{center}.tsv", center=center)
    return metas


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks" / "preprocess")
    ap.add_argument("--synth", type=Path, help="existing synthetic cohort (folder with subjects.tsv)")
    ap.add_argument("--n-per-center", type=int, default=None, help="default 3, --quick 1")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--centers", nargs="+", help="synthetic centers (default all; --quick ctrA ctrB)")
    ap.add_argument("--real", type=Path, default=None,
                    help="real public cases (default ../shared/data/real where it exists; none with --quick)")
    ap.add_argument("--backends", nargs="+", default=list(S.OFFLINE_BACKENDS))
    ap.add_argument("--only", nargs="+", default=["dice", "dice_real", "registration", "pipeline", "labels"])
    ap.add_argument("--quick", action="store_true", help="fewer subjects/motions/contrasts/real cases")
    args = ap.parse_args(argv)
    args.n_per_center = args.n_per_center or (1 if args.quick else 3)
    args.centers = args.centers or (["ctrA", "ctrB"] if args.quick else None)
    real_note = "real public cases: left out (--quick; --real DIR adds them)" if args.real is None else ""
    if args.real is None and not args.quick:
        args.real = ROOT.parent / "shared" / "data" / "real"
    if args.real is not None and not args.real.is_dir():
        real_note = f"real public cases: {args.real} not found, their rows are left out"
        args.real = None
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    torch.set_num_threads(int(os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"]))  # deepbet: as many as ITK
    header()
    print(f"# thrombseg preprocessing benchmark  (ITK threads {os.environ['ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS']}, "
          f"default backend {S.DEFAULT_BACKEND})")
    lap = [time.perf_counter()]

    def done(what):
        print(f"  {what}: {time.perf_counter() - lap[0]:.0f} s", file=sys.stderr, flush=True)
        lap[0] = time.perf_counter()

    sheet, raw, ing = synthetic_cohort(args)
    print(f"synthetic cohort: {shown(raw)} ({len(sheet)} patients, centers {sorted(set(sheet['center']))})")
    if real_note:
        print(real_note)
    done("cohort + ingest")
    if "dice" in args.only:
        table_dice(sheet, raw, ing, args.backends, args.out, args.quick)
        done("table 1")
    if "dice_real" in args.only and args.real:
        table_dice_real(args.real, args.backends, args.out, args.quick)
        done("table 1b")
    if "registration" in args.only:
        table_registration(sheet, ing, raw, args.real, args.out, quick=args.quick)
        done("table 2")
    metas = run_pipeline(sheet, ing, args.out, args.real, args.quick) if "pipeline" in args.only else []
    done("table 4")
    if "labels" in args.only:
        table_labels(sheet, ing, args.out, metas)
        done("table 3")
    print(f"\n(total benchmark time {time.perf_counter() - t0:.0f} s; tables in {shown(args.out)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
