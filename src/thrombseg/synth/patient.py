"""One synthetic patient: anatomy and pathology, every acquisition of the center, masks and truth."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from .acquisition import (
    Scanner,
    Session,
    SubjectWriter,
    ThrombusMark,
    acquire_diffusion,
    acquire_structural,
    acquire_susceptibility,
    write_infarct_mask,
)
from .atlas import get_atlas
from .centers import SUSCEPTIBILITY
from .io import write_json
from .lesions import territory_label
from .montage import canonical_slice
from .pathology import Streams, draw_pathology, draw_protocol
from .vessels import OCCLUSION_SITES

SUSCEPTIBILITY_PANELS = (*SUSCEPTIBILITY, "phase")  # montage panels cut through the thrombus, not the infarct


@dataclass
class SubjectTask:
    """One patient of the cohort plan: who, where, and the draws made for the whole cohort."""

    subject: str
    center: dict
    center_index: int
    index: int
    seed: int
    site: str
    low_contrast: bool
    size: str
    outdir: str


def _start_session(task: SubjectTask) -> Session:
    """The patient drawn in MNI space, its protocol draws, the scanner and the file writer."""
    atlas = get_atlas()
    rng = Streams.spawn(task.seed, task.center_index, task.index)
    pathology = draw_pathology(atlas, task.site, rng)
    protocol = draw_protocol(task.center, OCCLUSION_SITES[task.site][2], rng.protocol)
    scanner = Scanner(task.center, task.size, pathology.transform, protocol, rng.grid)
    writer = SubjectWriter(Path(task.outdir), task.subject, task.center)
    return Session(atlas, task.center, pathology, protocol, scanner, writer, rng, task.low_contrast)


def _acquire_all(session: Session) -> ThrombusMark:
    """Every series of the patient, in draw order; the thrombus as annotated."""
    thrombus = acquire_susceptibility(session)
    if "dwi" in session.protocol.present:
        acquire_diffusion(session)
    for seq in ("flair", "t1w"):
        if seq in session.protocol.present:
            acquire_structural(session, seq)
    return thrombus


def _grid_record(grid) -> dict:
    return {"shape": list(grid.shape), "spacing": np.round(grid.spacing, 6).tolist(),
            "orientation": "".join(nib.aff2axcodes(grid.affine))}


def _truth(session: Session, mark: ThrombusMark) -> dict:
    """What was drawn and where it was written (``derivatives/truth``)."""
    thrombus = session.pathology.vessels.thrombus
    infarct, mask, shell = session.pathology.infarct, session.infarct_mask, session.pathology.shell
    row, center = session.writer.row, session.center
    return {
        "subject": row["subject"], "center": center["name"], "field_strength": float(center["field_strength"]),
        "artery_segment": thrombus.site, "vessel": thrombus.vessel, "hemisphere": thrombus.hemisphere,
        "occlusion_class": thrombus.klass, "territory": territory_label(infarct.territory_codes),
        "territory_codes": infarct.territory_codes,
        "thrombus_volume_mm3": mark.volume_mm3,
        "thrombus_volume_true_mm3": thrombus.volume_mni_mm3 / session.pathology.transform.jacobian_det,
        "thrombus_radius_mm": float(np.median(thrombus.radius)),
        "thrombus_centreline_mni": np.round(thrombus.pts[::10], 3).tolist() + [np.round(thrombus.pts[-1], 3).tolist()],
        "thrombus_centroid_world": mark.centroid_world,
        "low_contrast": bool(session.low_contrast), "hyperintense_vessel_sign": session.protocol.hyperintense_vessel,
        "infarct_volume_ml": mask.volume_ml, "infarct_n_pieces": mask.n_pieces,
        "infarct_n_pieces_drawn": infarct.pieces_drawn, "infarct_target_volume_ml": infarct.target_ml,
        "infarct_mask_grid": mask.sequence,
        "n_microbleeds": len(session.pathology.vessels.microbleeds),
        "microbleeds_mni": [np.round(c, 2).tolist() for c, _ in session.pathology.vessels.microbleeds],
        "sequences": list(session.protocol.present), "missing_sequences": session.protocol.lost,
        "grids": {seq: _grid_record(grid) for seq, grid in session.scanner.grids.items()},
        "skull_mm": {"csf_rim": shell.csf_rim, "skull": shell.skull, "scalp": shell.scalp},
        "intensity_scale": session.protocol.intensity_scale, "noise": session.protocol.noise,
        "world_to_mni": session.pathology.transform.to_dict(),
        "files": {k: row[k] for k in row if k not in ("subject", "center", "split") and row[k]}
        | session.writer.truth_files,
    }


def _montage_material(session: Session, mark: ThrombusMark, infarct_world: np.ndarray) -> dict:
    """Small 2-D slices for the QC montage: susceptibility through the thrombus, the rest through the infarct."""
    panels = {}
    for seq, (data, affine) in session.writer.written.items():
        point = mark.centroid_world if seq in SUSCEPTIBILITY_PANELS else infarct_world
        panels[seq] = canonical_slice(data, affine, point)
    return {"thr_mask": mark.montage_slice, "panels": panels}


def _participant(session: Session, rng: np.random.Generator) -> dict:
    """The participants.tsv row: demographics drawn from the patient's own stream."""
    age = int(np.clip(rng.normal(72, 12), 30, 97))
    sex = str(rng.choice(["F", "M"]))
    return {"participant_id": f"sub-{session.writer.subject}", "center": session.center["name"], "age": age, "sex": sex,
            "field_strength": float(session.center["field_strength"]),
            "manufacturer": session.center.get("manufacturer", "Synthetic")}


def make_subject(task: SubjectTask) -> dict:
    """Generate and write one patient; its sheet row, participant row, truth and montage material."""
    session = _start_session(task)
    mark = _acquire_all(session)
    infarct_world = write_infarct_mask(session)
    if infarct_world is None:  # an empty infarct mask: the montage cuts through the thrombus
        infarct_world = mark.centroid_world
    truth = _truth(session, mark)
    write_json(truth, session.writer.truth_path("truth.json"))
    return {"row": session.writer.row, "participant": _participant(session, session.rng.demo), "truth": truth,
            "montage": _montage_material(session, mark, infarct_world)}
