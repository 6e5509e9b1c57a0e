"""Embedded synthetic multi-center acute-stroke cohort.

Built from the MNI152 2009 T1 template and GM/WM maps that ship inside the nilearn wheel (loaded
offline). Each patient gets a random affine + smooth non-linear deformation, a skull/scalp shell,
arteries (ICA, M1, M2, ACA, PCA, basilar, cortical branches) and veins as tubes, 0-5 microbleeds,
one occlusive thrombus and an infarct downstream in the occluded artery's territory; with
``negative_share`` > 0 some patients have no thrombus (recanalised, lacunar, no stroke). Each center has
its own protocol (sequences, voxel sizes, orientation, obliquity, storage, noise, bias, scale).

    from thrombseg.synth import generate_cohort, DEFAULT_CENTERS
    sheet = generate_cohort("results/synth", n_per_center=8, seed=0, size="demo", n_jobs=2)

Sizes: ``size="paper"`` uses the protocols' own voxel sizes (e.g. SWI 0.5x0.5x2 mm, DWI 1x1x5 mm);
``size="demo"`` (default) keeps slice thickness and coarsens in-plane resolution so that the whole
downstream pipeline runs on a laptop CPU (SWI 1.0-1.2 mm in-plane, DWI 1.25-2 mm, FLAIR 1.0 mm or
1.5 mm isotropic); ``benchmarks/synth.py`` measures its time and size on disk. Centers are plain
dicts (``thrombseg.synth.centers`` documents the keys). Truth per subject (``derivatives/truth``)
includes the world->MNI mapping; rebuild it with ``PatientTransform.from_dict(truth["world_to_mni"])``.

Modules, bottom up: ``atlas`` (MNI anatomy), ``transform`` (per-patient warp), ``vessels`` and
``lesions`` (thrombus, infarct), ``render`` (tissue to image), ``centers`` (protocols and grids),
``pathology`` (one patient's draws), ``acquisition`` (its series and masks), ``patient`` (one patient
end to end), ``cohort`` (all of them, the BIDS tree), ``io`` and ``montage`` (files, QC).
"""
from .centers import DEFAULT_CENTERS, acquisition_grid, sequence_spacing, validate_centers
from .cohort import SHEET_COLUMNS, generate_cohort, subject_id, subject_ids, thrombus_presence
from .transform import PatientTransform

__all__ = ["generate_cohort", "subject_id", "subject_ids", "thrombus_presence", "DEFAULT_CENTERS", "SHEET_COLUMNS",
           "PatientTransform", "validate_centers", "sequence_spacing", "acquisition_grid"]
