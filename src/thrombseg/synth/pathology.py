"""One patient in MNI space (warp, head shell, vessels, thrombus, infarct) and its protocol draws.

Each part of a patient draws from its own random stream (:class:`Streams`), so that a change to one
part (say, one more vessel) leaves the draws of the others (the infarct, the noise) as they were.

A thrombus-negative patient (:data:`NEGATIVE_KINDS`) keeps every vessel, vein and microbleed; only the
clot (and, without a stroke, the infarct) is left out.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from .atlas import Atlas
from .centers import SEQUENCE_KEYS
from .lesions import LACUNAR, draw_volume, make_infarct, target_volume_ml, territories_for
from .render import Shell
from .transform import PatientTransform
from .vessels import (
    OCCLUSION_SITES,
    Thrombus,
    VesselCloud,
    build_arteries,
    build_veins,
    flow_status,
    place_thrombus,
    sample_microbleeds,
    to_cloud,
)

STREAM_SALT = 20240  # fixed entry of every patient's seed sequence: changing it changes every cohort
MICROBLEED_COUNT_P = [0.35, 0.2, 0.15, 0.12, 0.1, 0.08]  # P(0, 1, ..., 5 microbleeds)
LOSABLE_SERIES = ("dwi", "phase", "flair")  # a center's "missing" probabilities, in draw order
# world clot volume (mm^3) per occlusion class: (median, log-sd, min, max); real cohort means 232 mm^3
# proximal, 77 mm^3 distal
CLOT_VOLUME_MM3 = {"proximal": (175.0, 0.65, 40.0, 600.0), "distal": (60.0, 0.6, 20.0, 250.0)}
HYPERINTENSE_VESSEL_P = {"proximal": 0.5, "distal": 0.3}  # P(FLAIR sign) per occlusion class; no clot: none
# Thrombus-negative patients: the infarct of an occlusion that has since reopened; a lacune (no clot to
# see); no stroke at all (a mimic). The shares are an assumption of this generator, not measured.
RECANALISED, NO_STROKE = "recanalised", "no_stroke"
NEGATIVE_KINDS = (RECANALISED, LACUNAR, NO_STROKE)
NEGATIVE_KIND_SHARES = {RECANALISED: 0.4, LACUNAR: 0.3, NO_STROKE: 0.3}


@dataclass
class Streams:
    """The independent random streams of one patient (field order = spawn order of its seed)."""

    pose: np.random.Generator
    vessel: np.random.Generator
    clot: np.random.Generator
    lesion: np.random.Generator
    protocol: np.random.Generator
    grid: np.random.Generator
    noise: np.random.Generator
    contrast: np.random.Generator
    demo: np.random.Generator

    @classmethod
    def spawn(cls, seed: int, center_index: int, index: int) -> Streams:
        """The streams of the ``index``-th patient of the ``center_index``-th center."""
        seeds = np.random.SeedSequence([seed, center_index, index, STREAM_SALT]).spawn(len(fields(cls)))
        return cls(*[np.random.default_rng(s) for s in seeds])


@dataclass
class Vasculature:
    """Arteries and veins as one point cloud, with the thrombus and microbleeds placed in it."""

    hemisphere: str           # L | R as drawn (the thrombus says "midline" for the basilar artery)
    thrombus: Thrombus | None  # where the clot sits, or sat (recanalised); None: no large-vessel occlusion
    clot_volume_mm3: float    # world volume drawn for the clot (0: no clot)
    microbleeds: list         # (centre MNI mm, radius mm)
    cloud: VesselCloud
    clot_present: bool = True  # False for a negative patient: no clot is drawn, flow is normal

    @property
    def clot(self) -> Thrombus | None:
        """The clot the images show, None for a negative patient."""
        return self.thrombus if self.clot_present else None


@dataclass
class Infarct:
    """The infarct drawn downstream of the occlusion, on the atlas 2 mm grid."""

    territory_codes: list[int]
    target_ml: float          # world volume aimed at
    field: np.ndarray         # soft field, iso-0.5 = boundary
    pieces_drawn: int


@dataclass
class Pathology:
    """The patient in MNI space: pose and warp, head shell, vessels and thrombus, infarct."""

    transform: PatientTransform
    shell: Shell
    vessels: Vasculature
    infarct: Infarct


@dataclass
class Protocol:
    """This patient's draws of the center's protocol: series acquired, contrasts, scanner effects."""

    present: list[str]            # config keys of the series acquired, in generation order
    lost: list[str]               # series of the center this patient lacks
    hyperintense_vessel: bool     # FLAIR hyperintense-vessel sign of the slow-flowing arteries
    clot_adc: float               # 1e-3 mm^2/s
    infarct_t2_factor: float      # T2 prolongation of the infarct (b0 signal factor)
    infarct_adc_ratio: float      # infarct ADC / normal ADC
    infarct_flair_rise: float     # relative FLAIR signal rise in the infarct
    intensity_scale: float
    bias_coefs: np.ndarray        # degree-2 polynomial of the log bias field
    background_coefs: np.ndarray  # degree-2 polynomial of the background phase
    background_amplitude: float   # rad
    noise: float                  # sigma relative to white-matter signal


def _draw_shell(rng: np.random.Generator) -> Shell:
    """CSF rim, skull and scalp thickness (mm)."""
    return Shell(csf_rim=float(rng.uniform(1.0, 2.5)), skull=float(rng.uniform(5.0, 8.0)),
                 scalp=float(rng.uniform(4.0, 7.0)))


def _draw_vasculature(atlas: Atlas, site: str, jacobian: float, rng: Streams, negative_kind: str = "") -> Vasculature:
    """Arterial tree, a thrombus at ``site`` (flow stops past it), veins and microbleeds.

    Recanalised: the clot is placed (its territory infarcts) but not drawn and flow is normal.
    Lacunar, no stroke (``site`` empty): no large-vessel occlusion at all.
    """
    hemisphere = str(rng.clot.choice(["L", "R"]))
    arteries = build_arteries(atlas, rng.vessel)
    thrombus, clot_volume = None, 0.0
    if site:
        clot_volume = draw_volume(rng.clot, OCCLUSION_SITES[site][2], CLOT_VOLUME_MM3)
        thrombus = place_thrombus(arteries, site, hemisphere, rng.clot, clot_volume * jacobian)
        if not negative_kind:
            flow_status(arteries, thrombus)
    veins = build_veins(atlas, rng.vessel)
    n_microbleeds = int(rng.lesion.choice(len(MICROBLEED_COUNT_P), p=MICROBLEED_COUNT_P))
    avoid = thrombus.pts if thrombus is not None else np.zeros((0, 3))
    microbleeds = sample_microbleeds(atlas, rng.lesion, avoid, n_microbleeds)
    return Vasculature(hemisphere, thrombus, 0.0 if negative_kind else clot_volume, microbleeds,
                       to_cloud(arteries, veins, microbleeds), clot_present=not negative_kind)


def _draw_infarct(atlas: Atlas, site: str, vessels: Vasculature, jacobian: float,
                  rng: np.random.Generator, negative_kind: str = "") -> Infarct:
    """An infarct of a drawn volume in the territories the occluded artery feeds (a lacune: deep MCA)."""
    if negative_kind == NO_STROKE:
        return Infarct([], 0.0, np.zeros(atlas.territory.shape, np.float32), 0)
    if negative_kind == LACUNAR:
        site, vessel, klass = LACUNAR, "", LACUNAR
    else:
        vessel, klass = vessels.thrombus.vessel, vessels.thrombus.klass
    codes = territories_for(site, vessel, vessels.hemisphere, rng)
    target = target_volume_ml(klass, rng)
    field, pieces_drawn = make_infarct(atlas, rng, codes, target, jacobian, site)
    return Infarct(codes, target, field, pieces_drawn)


def draw_pathology(atlas: Atlas, site: str, rng: Streams, negative_kind: str = "") -> Pathology:
    """Pose and warp, then vessels and thrombus, then the infarct downstream.

    ``site``: the occlusion site (also of a recanalised patient), empty for a lacune or no stroke;
    ``negative_kind``: one of :data:`NEGATIVE_KINDS`, empty for a patient with a thrombus.
    """
    if negative_kind and negative_kind not in NEGATIVE_KINDS:
        raise ValueError(f"negative_kind must be one of {NEGATIVE_KINDS}, not {negative_kind!r}")
    if bool(site) != (negative_kind in ("", RECANALISED)):
        raise ValueError(f"an occlusion site goes with a clot or a recanalised one, not {negative_kind!r} (site {site!r})")
    transform = PatientTransform.random(rng.pose)
    jacobian = transform.jacobian_det  # MNI volume per world volume
    vessels = _draw_vasculature(atlas, site, jacobian, rng, negative_kind)
    infarct = _draw_infarct(atlas, site, vessels, jacobian, rng.lesion, negative_kind)
    return Pathology(transform, _draw_shell(rng.pose), vessels, infarct)


def _lost_series(missing: dict, present: list[str], u: float) -> list[str]:
    """The series this patient lacks: at most one of DWI (with its ADC), phase, FLAIR."""
    lost = []
    start = 0.0
    for key in LOSABLE_SERIES:
        p = float(missing.get(key, 0.0))
        if p > 0 and start <= u < start + p and key in present:
            lost = ["dwi", "adc"] if key == "dwi" else [key]
        start += p
    return lost


def draw_protocol(center: dict, klass: str | None, rng: np.random.Generator) -> Protocol:
    """Which series exist, contrast and scanner draws (the keyword order below is the draw order).

    ``klass``: the class of the clot the images show; None without one (no slow flow, no FLAIR sign).
    """
    configured = [s for s in SEQUENCE_KEYS if s in center["sequences"]]
    lost = _lost_series(center.get("missing", {}), configured, rng.random())
    return Protocol(
        present=[s for s in configured if s not in lost], lost=lost,
        hyperintense_vessel=bool(rng.random() < HYPERINTENSE_VESSEL_P.get(klass, 0.0)),
        clot_adc=float(rng.uniform(0.45, 0.9)),
        infarct_t2_factor=float(rng.uniform(1.05, 1.2)),
        infarct_adc_ratio=float(rng.uniform(0.5, 0.7)),
        infarct_flair_rise=float(rng.uniform(0.05, 0.15)),
        intensity_scale=float(center["intensity_scale"]) * float(rng.lognormal(0.0, 0.15)),
        bias_coefs=rng.normal(0, [0.6, 0.6, 0.6, 0.4, 0.4, 0.4, 0.3, 0.3, 0.3]),
        background_coefs=rng.normal(0, [1.0, 1.0, 1.0, 0.6, 0.6, 0.6, 0.4, 0.4, 0.4]),
        background_amplitude=float(rng.uniform(2.0, 6.0)),
        noise=float(center["noise"]) * float(rng.uniform(0.8, 1.25)),
    )
