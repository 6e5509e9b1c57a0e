"""One synthetic patient: anatomy and pathology, every acquisition of the center, masks and truth."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from ..core.sequences import PRESENCE_COLUMN, presence_value
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
from .vessels import Thrombus

SUSCEPTIBILITY_PANELS = (*SUSCEPTIBILITY, "phase")  # montage panels cut through the thrombus, not the infarct


@dataclass
class SubjectTask:
    """One patient of the cohort plan: who, where, and the draws made for the whole cohort."""

    subject: str
    center: dict
    center_index: int
    index: int
    seed: int
    site: str           # occlusion site (also where a recanalised clot was); empty for a lacune or no stroke
    low_contrast: bool
    size: str
    outdir: str
    negative_kind: str = ""  # empty: a thrombus; else one of pathology.NEGATIVE_KINDS


def _start_session(task: SubjectTask) -> Session:
    """The patient drawn in MNI space, its protocol draws, the scanner and the file writer."""
    atlas = get_atlas()
    rng = Streams.spawn(task.seed, task.center_index, task.index)
    pathology = draw_pathology(atlas, task.site, rng, task.negative_kind)
    clot = pathology.vessels.clot
    protocol = draw_protocol(task.center, clot.klass if clot is not None else None, rng.protocol)
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


def _occlusion(thrombus: Thrombus | None, hemisphere: str | None) -> dict:
    """Where the occlusion is (or was, recanalised); nulls without one (the lacune's side stays)."""
    if thrombus is None:
        return {"artery_segment": None, "vessel": None, "hemisphere": hemisphere, "occlusion_class": None}
    return {"artery_segment": thrombus.site, "vessel": thrombus.vessel, "hemisphere": thrombus.hemisphere,
            "occlusion_class": thrombus.klass}


def _clot(clot: Thrombus | None, mark: ThrombusMark, jacobian: float) -> dict:
    """The clot as drawn and as annotated; zero and nulls for a negative patient."""
    if clot is None:
        return {"thrombus_volume_mm3": mark.volume_mm3, "thrombus_volume_true_mm3": 0.0, "thrombus_radius_mm": None,
                "thrombus_centreline_mni": [], "thrombus_centroid_world": None}
    return {"thrombus_volume_mm3": mark.volume_mm3, "thrombus_volume_true_mm3": clot.volume_mni_mm3 / jacobian,
            "thrombus_radius_mm": float(np.median(clot.radius)),
            "thrombus_centreline_mni": np.round(clot.pts[::10], 3).tolist() + [np.round(clot.pts[-1], 3).tolist()],
            "thrombus_centroid_world": mark.centroid_world}


def _truth(session: Session, mark: ThrombusMark, negative_kind: str) -> dict:
    """What was drawn and where it was written (``derivatives/truth``)."""
    vessels = session.pathology.vessels
    infarct, mask, shell = session.pathology.infarct, session.infarct_mask, session.pathology.shell
    row, center = session.writer.row, session.center
    lesion_side = vessels.hemisphere if infarct.territory_codes else None  # a lacune has a side, no stroke none
    return {
        "subject": row["subject"], "center": center["name"], "field_strength": float(center["field_strength"]),
        "thrombus_present": vessels.clot is not None, "negative_kind": negative_kind,
        **_occlusion(vessels.thrombus, lesion_side),
        "territory": territory_label(infarct.territory_codes), "territory_codes": infarct.territory_codes,
        **_clot(vessels.clot, mark, session.pathology.transform.jacobian_det),
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
        "files": {k: row[k] for k in row if k not in ("subject", "center", "split", PRESENCE_COLUMN) and row[k]}
        | session.writer.truth_files,
    }


def _montage_material(session: Session, mark: ThrombusMark, infarct_world: np.ndarray) -> dict:
    """Small 2-D slices for the QC montage: susceptibility through the thrombus, the rest through the infarct."""
    panels = {}
    for seq, (data, affine) in session.writer.written.items():
        point = mark.centroid_world if seq in SUSCEPTIBILITY_PANELS else infarct_world
        panels[seq] = canonical_slice(data, affine, point)
    return {"thr_mask": mark.montage_slice, "panels": panels}


def _participant(session: Session, rng: np.random.Generator, negative_kind: str) -> dict:
    """The participants.tsv row: demographics drawn from the patient's own stream, thrombus presence."""
    age = int(np.clip(rng.normal(72, 12), 30, 97))
    sex = str(rng.choice(["F", "M"]))
    return {"participant_id": f"sub-{session.writer.subject}", "center": session.center["name"], "age": age, "sex": sex,
            "field_strength": float(session.center["field_strength"]),
            "manufacturer": session.center.get("manufacturer", "Synthetic"),
            PRESENCE_COLUMN: session.writer.row[PRESENCE_COLUMN], "negative_kind": negative_kind}


def make_subject(task: SubjectTask) -> dict:
    """Generate and write one patient; its sheet row, participant row, truth and montage material.

    A negative patient's thrombus mask is written all zeros (an empty label is a valid one).
    """
    session = _start_session(task)
    session.writer.row[PRESENCE_COLUMN] = presence_value(not task.negative_kind)
    mark = _acquire_all(session)
    infarct_world = write_infarct_mask(session)
    if infarct_world is None:  # an empty infarct mask: the montage cuts where the thrombus panels do
        infarct_world = mark.centroid_world
    truth = _truth(session, mark, task.negative_kind)
    write_json(truth, session.writer.truth_path("truth.json"))
    return {"row": session.writer.row, "participant": _participant(session, session.rng.demo, task.negative_kind),
            "truth": truth,
            "montage": _montage_material(session, mark, infarct_world)}
