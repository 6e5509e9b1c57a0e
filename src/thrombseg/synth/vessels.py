"""Arteries, veins, microbleeds and the thrombus as analytic structures in MNI space.

Arteries are centre-lines (MNI mm, right side; mirrored for the left) with radii, jittered per
patient and snapped into the nearest CSF (cisterns, sylvian fissure) so that they run where vessels
run. Everything is densified into a point cloud (centre-line samples with a radius and a kind);
images and masks evaluate "distance to the nearest centre-line point <= radius" at the MNI position
of each voxel, which gives tubes with caps.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from .atlas import SURFACE_CENTRE, Atlas

# kinds of point in the vessel cloud
ARTERY, VEIN, SLOW, MICROBLEED = 0, 1, 2, 3

# name: (control points for the right side (x>0) in MNI mm, radius at start, radius at end, parent,
#        snap into CSF?)
ARTERY_TEMPLATE: dict[str, tuple] = {
    "ICA": ([(22, -14, -96), (22, -12, -80), (20, -8, -64), (19, -6, -50), (18, -6, -41), (15, -2, -34),
             (16, 6, -28), (15, 5, -22), (13, 3, -17)], 2.3, 2.0, None, False),
    "M1": ([(13, 3, -17), (20, 3, -16), (27, 4, -15), (33, 4, -13), (38, 3, -10)], 1.5, 1.3, "ICA", True),
    "M2sup": ([(38, 3, -10), (41, 1, -2), (42, -3, 8), (43, -10, 17), (45, -18, 26), (47, -25, 35)],
              1.05, 0.85, "M1", True),
    "M2inf": ([(38, 3, -10), (43, -3, -9), (47, -14, -6), (50, -27, -1), (51, -40, 5)], 1.05, 0.85, "M1", True),
    "A1": ([(13, 3, -17), (9, 8, -14), (5, 13, -12), (2, 16, -11)], 1.0, 0.95, "ICA", True),
    "A2": ([(2, 16, -11), (3, 24, -5), (3, 31, 4), (3, 32, 16), (4, 25, 27), (4, 12, 33), (4, -8, 38),
            (4, -28, 40)], 0.95, 0.8, "A1", True),
    "PCom": ([(13, 3, -17), (14, -6, -17), (13, -17, -16)], 0.6, 0.6, "ICA", True),
    "PCA": ([(0.5, -13, -20), (7, -14, -19), (13, -17, -16), (19, -27, -12), (23, -40, -8), (22, -55, -4),
             (17, -70, 0), (11, -85, 4)], 1.1, 0.8, "BA", True),
    "VA": ([(13, -48, -96), (10, -45, -82), (6, -38, -70), (0.0, -31, -63)], 1.4, 1.3, None, False),
}
BASILAR = ([(0, -31, -63), (0, -25, -52), (0, -21, -42), (0, -18, -32), (0, -15, -24), (0, -13, -20)],
           1.7, 1.5)

# occlusion sites: (vessel, arc fraction range where the clot midpoint may lie, class)
OCCLUSION_SITES = {
    "ICA": ("ICA", (0.62, 0.97), "proximal"),
    "M1": ("M1", (0.1, 0.9), "proximal"),
    "M2": (("M2sup", "M2inf"), (0.05, 0.6), "distal"),
    "ACA": ("A2", (0.05, 0.5), "distal"),
    "PCA": ("PCA", (0.08, 0.5), "distal"),
    "BA": ("BA", (0.1, 0.9), "proximal"),
}
# cohort shares of the occlusion sites (about half M1, a third M2/distal, rest ICA/basilar/PCA)
SITE_SHARES = {"M1": 0.50, "M2": 0.27, "ACA": 0.06, "ICA": 0.09, "BA": 0.04, "PCA": 0.04}

# descendants (downstream) of each vessel, per side
CHILDREN = {"ICA": ["M1", "A1", "PCom"], "M1": ["M2sup", "M2inf"], "M2sup": ["M3sup"], "M2inf": ["M3inf"],
            "A1": ["A2"], "A2": ["A3"], "PCA": ["P3"], "BA": ["PCA_L", "PCA_R"]}


@dataclass
class Polyline:
    name: str          # e.g. "M1_R"
    pts: np.ndarray    # (N,3) dense centre-line, ~0.5 mm spacing
    radius: np.ndarray  # (N,)
    kind: int = ARTERY

    @property
    def arclength(self) -> np.ndarray:
        return np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(self.pts, axis=0), axis=1))])


@dataclass
class VesselCloud:
    pts: np.ndarray
    radius: np.ndarray
    kind: np.ndarray
    lines: dict = field(default_factory=dict)


def densify(ctrl: np.ndarray, r0: float, r1: float, step: float = 0.5, smooth_mm: float = 3.0):
    ctrl = np.asarray(ctrl, float)
    seg = np.linalg.norm(np.diff(ctrl, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    n = max(2, int(np.ceil(s[-1] / step)) + 1)
    t = np.linspace(0, s[-1], n)
    pts = np.stack([np.interp(t, s, ctrl[:, i]) for i in range(3)], 1)
    if smooth_mm > 0 and n > 4:
        sig = smooth_mm / step
        padn = int(4 * sig) + 1
        for i in range(3):
            # reflect about the end points (odd extension) so that they stay fixed
            a = pts[:, i]
            ext = np.concatenate([2 * a[0] - a[padn:0:-1], a, 2 * a[-1] - a[-2:-padn - 2:-1]])
            pts[:, i] = ndi.gaussian_filter1d(ext, sig, mode="nearest")[padn:padn + n]
    rad = np.linspace(r0, r1, n)
    return pts, rad


def _snap_to_csf(atlas: Atlas, pts: np.ndarray, radius: float = 3.0) -> np.ndarray:
    """Move each control point to the position with least parenchyma within ``radius`` mm."""
    off = np.stack(np.meshgrid(*[np.arange(-radius, radius + 0.1, 1.0)] * 3, indexing="ij"), -1).reshape(-1, 3)
    off = off[np.linalg.norm(off, axis=1) <= radius]
    out = pts.copy()
    for i, p in enumerate(pts):
        cand = p + off
        tis = atlas.sample("gm", cand) + atlas.sample("wm", cand)
        cost = tis + 0.02 * np.linalg.norm(off, axis=1)
        out[i] = cand[np.argmin(cost)]
    return out


def _cortical_branch(atlas: Atlas, start: np.ndarray, rng: np.random.Generator, bias_dir, length: float,
                     r0: float, r1: float, name: str, kind: int = ARTERY, offset: float = 0.8) -> Polyline:
    """A vessel that leaves ``start``, reaches the brain surface and runs over it (~``length`` mm)."""
    u = start - SURFACE_CENTRE
    u /= np.linalg.norm(u)
    bias_dir = np.asarray(bias_dir, float)
    pts = [start]
    first = atlas.surface_point(u, offset)
    pts.append(0.5 * (start + first) + rng.normal(0, 1.5, 3))
    pts.append(first)
    step = 5.0
    d = bias_dir - np.dot(bias_dir, u) * u
    d /= np.linalg.norm(d) + 1e-9
    for _ in range(int(length / step)):
        d = d + rng.normal(0, 0.35, 3)
        d -= np.dot(d, u) * u
        d /= np.linalg.norm(d) + 1e-9
        r = np.linalg.norm(pts[-1] - SURFACE_CENTRE)
        u = u + d * step / max(r, 20.0)
        u /= np.linalg.norm(u)
        pts.append(atlas.surface_point(u, offset))
    p, rad = densify(np.array(pts), r0, r1, smooth_mm=2.0)
    return Polyline(name, p, rad, kind)


def build_arteries(atlas: Atlas, rng: np.random.Generator) -> dict[str, Polyline]:
    """Per-patient arterial tree (dense polylines keyed ``<vessel>_<L|R>``, basilar ``BA``)."""
    lines: dict[str, Polyline] = {}
    ends: dict[str, np.ndarray] = {}

    def make(name, ctrl, r0, r1, snap, parent_key):
        ctrl = np.array(ctrl, float)
        ctrl[1:] += rng.normal(0, 1.3, ctrl[1:].shape)
        if snap:
            ctrl[1:] = _snap_to_csf(atlas, ctrl[1:])
        if parent_key is not None:
            pl = lines[parent_key].pts
            ctrl[0] = pl[np.argmin(np.linalg.norm(pl - ctrl[0], axis=1))]
        p, r = densify(ctrl, r0, r1)
        lines[name] = Polyline(name, p, r)
        ends[name] = p[-1]

    # vertebrals and basilar first (PCA hangs on BA)
    for side, sx in (("R", 1.0), ("L", -1.0)):
        ctrl, r0, r1, _, _ = ARTERY_TEMPLATE["VA"]
        c = np.array(ctrl, float) * [sx, 1, 1]
        make(f"VA_{side}", c, r0, r1, False, None)
    ba_ctrl = np.array(BASILAR[0], float)
    ba_ctrl[0] = 0.5 * (ends["VA_R"] + ends["VA_L"])
    make("BA", ba_ctrl, BASILAR[1], BASILAR[2], True, None)
    for side, sx in (("R", 1.0), ("L", -1.0)):
        for name in ("ICA", "M1", "M2sup", "M2inf", "A1", "A2", "PCom", "PCA"):
            ctrl, r0, r1, parent, snap = ARTERY_TEMPLATE[name]
            c = np.array(ctrl, float) * [sx, 1, 1]
            pkey = None if parent is None else ("BA" if parent == "BA" else f"{parent}_{side}")
            make(f"{name}_{side}", c, r0, r1, snap, pkey)
        # cortical branches (M3/M4, callosomarginal, calcarine): distractors and slow-flow carriers
        for trunk, n_br, bias in (("M2sup", 3, (0, -0.3, 1)), ("M2inf", 3, (0, -1, 0.2)), ("A2", 2, (0, -0.5, 1)),
                                  ("PCA", 2, (0, -1, 0.3))):
            tl = lines[f"{trunk}_{side}"]
            for b in range(n_br):
                i = int(rng.uniform(0.35, 1.0) * (len(tl.pts) - 1))
                child = {"M2sup": "M3sup", "M2inf": "M3inf", "A2": "A3", "PCA": "P3"}[trunk]
                nm = f"{child}{b}_{side}"
                lines[nm] = _cortical_branch(atlas, tl.pts[i], rng, bias, rng.uniform(20, 45), 0.7, 0.5, nm)
    return lines


def descendants(vessel_key: str) -> list[str]:
    """Keys of the vessels downstream of ``vessel_key`` (including branch families like M3sup*)."""
    if vessel_key == "BA":
        base, side = "BA", None
    else:
        base, side = vessel_key.rsplit("_", 1)
    out = []
    for ch in CHILDREN.get(base, []):
        if base == "BA":
            out.append(ch)
            out += descendants(ch)
        else:
            key = f"{ch}_{side}"
            out.append(key)
            out += descendants(key)
    return out


def _match(lines: dict, keys: list[str]) -> list[str]:
    out = []
    for k in keys:
        if k in lines:
            out.append(k)
        else:  # branch families: M3sup -> M3sup0_R, M3sup1_R, ...
            base, side = k.rsplit("_", 1)
            out += [n for n in lines if n.startswith(base) and n.endswith("_" + side) and n[len(base):-2].isdigit()]
    return out


def _venous_sinuses(atlas: Atlas) -> dict[str, Polyline]:
    """Superior sagittal sinus over the vertex (midline, just outside the brain), transverse + sigmoid sinuses."""
    a = np.deg2rad(np.linspace(-5, 215, 60))
    dirs = np.stack([np.zeros_like(a), np.cos(a), np.sin(a)], 1)
    left = atlas.surface_point(dirs + [-0.06, 0, 0], 0.0)
    right = atlas.surface_point(dirs + [0.06, 0, 0], 0.0)
    rads = np.maximum(np.linalg.norm(left - SURFACE_CENTRE, axis=1), np.linalg.norm(right - SURFACE_CENTRE, axis=1))
    sss = SURFACE_CENTRE + dirs * (rads + 3.0)[:, None]
    sss[:, 0] = 0.0
    p, r = densify(sss, 2.2, 3.5, smooth_mm=4.0)
    sinuses = {"SSS": Polyline("SSS", p, r, VEIN)}
    torcula = p[-1]
    for side, sx in (("R", 1.0), ("L", -1.0)):
        psi = np.deg2rad(np.linspace(0, 80, 14))
        d = np.stack([sx * np.sin(psi), -np.cos(psi), np.full_like(psi, -0.28)], 1)
        tr = atlas.surface_point(d, 3.0)
        tr[0] = torcula
        sig = np.array([tr[-1] + [0, 6, -10], [sx * 42, -38, -45], [sx * 38, -30, -60]])
        p, r = densify(np.vstack([tr, sig]), 3.0, 3.2, smooth_mm=4.0)
        sinuses[f"TS_{side}"] = Polyline(f"TS_{side}", p, r, VEIN)
    return sinuses


def _deep_veins(atlas: Atlas, rng: np.random.Generator, torcula: np.ndarray) -> dict[str, Polyline]:
    """Internal cerebral veins, basal veins of Rosenthal (to the vein of Galen) and the straight sinus."""
    veins = {}
    galen = np.array([0.0, -44.0, 6.0])
    for side, sx in (("R", 1.0), ("L", -1.0)):
        icv = np.array([[sx * 3, 2, 14], [sx * 2.5, -12, 15], [sx * 2, -28, 13], [sx * 1, -38, 9], galen])
        p, r = densify(icv + rng.normal(0, 0.7, icv.shape) * [[0], [1], [1], [1], [0]], 0.9, 1.2)
        veins[f"ICV_{side}"] = Polyline(f"ICV_{side}", p, r, VEIN)
        bvr = np.array([[sx * 20, -2, -13], [sx * 25, -18, -9], [sx * 22, -32, -3], [sx * 12, -42, 3], galen])
        bvr[1:-1] = _snap_to_csf(atlas, bvr[1:-1] + rng.normal(0, 1.0, (3, 3)))
        p, r = densify(bvr, 0.9, 1.1)
        veins[f"BVR_{side}"] = Polyline(f"BVR_{side}", p, r, VEIN)
    p, r = densify(np.array([galen, [0, -55, 3], [0, -72, 0], [0, -88, -2], torcula]), 1.8, 2.4)
    veins["StS"] = Polyline("StS", p, r, VEIN)
    return veins


def _cortical_veins(atlas: Atlas, rng: np.random.Generator) -> dict[str, Polyline]:
    """12-21 cortical veins running over the surface up towards the superior sagittal sinus."""
    veins = {}
    for i in range(int(rng.integers(12, 22))):
        u = rng.normal(0, 1, 3)
        u[2] = abs(u[2]) * 0.6 + 0.1
        u /= np.linalg.norm(u)
        start = atlas.surface_point(u, 0.8)
        side = np.sign(start[0]) or 1.0
        pl = _cortical_branch(atlas, start, rng, (-side * 0.6, rng.normal(0, 0.3), 1.0), rng.uniform(25, 60),
                              rng.uniform(0.6, 0.9), rng.uniform(1.0, 1.5), f"CV{i}", kind=VEIN, offset=1.0)
        veins[pl.name] = pl
    return veins


def _medullary_veins(atlas: Atlas, rng: np.random.Generator) -> dict[str, Polyline]:
    """15-29 thin straight veins radiating from beside the lateral ventricles."""
    veins = {}
    for i in range(int(rng.integers(15, 30))):
        side = rng.choice([-1.0, 1.0])
        for _ in range(20):  # start in white matter beside the lateral ventricle
            st = np.array([side * rng.uniform(16, 26), rng.uniform(-35, 20), rng.uniform(8, 28)])
            if atlas.sample("wm", st[None])[0] > 0.6:
                break
        d = np.array([side * rng.uniform(0.5, 1.0), rng.normal(0, 0.3), rng.uniform(0.2, 0.8)])
        d /= np.linalg.norm(d)
        p, r = densify(np.array([st, st + d * rng.uniform(15, 28)]), 0.35, 0.45, smooth_mm=0)
        veins[f"MV{i}"] = Polyline(f"MV{i}", p, r, VEIN)
    return veins


def build_veins(atlas: Atlas, rng: np.random.Generator) -> dict[str, Polyline]:
    """Per-patient veins (dense polylines): sinuses, deep veins, cortical and medullary veins."""
    veins = _venous_sinuses(atlas)
    veins |= _deep_veins(atlas, rng, torcula=veins["SSS"].pts[-1])
    veins |= _cortical_veins(atlas, rng)
    veins |= _medullary_veins(atlas, rng)
    return veins


def sample_microbleeds(atlas: Atlas, rng: np.random.Generator, avoid: np.ndarray, n: int):
    """``n`` microbleeds (centre MNI mm, radius mm) in parenchyma, >= 20 mm from ``avoid`` points."""
    out = []
    tries = 0
    while len(out) < n and tries < 2000:
        tries += 1
        p = rng.uniform([-65, -95, -40], [65, 65, 70])
        if atlas.sample("brain", p[None])[0] < 0.9 or (atlas.sample("gm", p[None])[0] + atlas.sample("wm", p[None])[0]) < 0.8:
            continue
        if len(avoid) and np.min(np.linalg.norm(avoid - p, axis=1)) < 20:
            continue
        out.append((p, float(rng.uniform(1.0, 2.2))))
    return out


@dataclass
class Thrombus:
    site: str             # ICA, M1, M2, ACA, PCA, BA
    vessel: str           # key of the occluded vessel, e.g. M1_L
    hemisphere: str       # L, R or midline
    klass: str            # proximal / distal
    pts: np.ndarray       # dense centre-line of the clot (MNI mm, 0.1 mm spacing)
    radius: np.ndarray    # clot radius along it
    volume_mni_mm3: float  # analytic volume in MNI space
    end_index: dict       # vessel key -> index on its polyline past which flow stops


def place_thrombus(lines: dict[str, Polyline], site: str, hemisphere: str, rng: np.random.Generator,
                   target_volume_mm3: float) -> Thrombus:
    vessel, frac_rng, klass = OCCLUSION_SITES[site]
    if isinstance(vessel, tuple):
        vessel = vessel[int(rng.integers(len(vessel)))]
    key = "BA" if vessel == "BA" else f"{vessel}_{hemisphere}"
    main = lines[key]
    # path: the vessel, continued into its main downstream branch
    cont = {"ICA": "M1", "M1": rng.choice(["M2sup", "M2inf"]), "BA": None, "A2": None, "PCA": None,
            "M2sup": None, "M2inf": None}[vessel]
    pieces = [(key, main)]
    if cont is not None:
        pieces.append((f"{cont}_{hemisphere}", lines[f"{cont}_{hemisphere}"]))
    pts = np.concatenate([p.pts for _, p in pieces])
    rad = np.concatenate([p.radius for _, p in pieces])
    owner = np.concatenate([[i] * len(p.pts) for i, (_, p) in enumerate(pieces)])
    local = np.concatenate([np.arange(len(p.pts)) for _, p in pieces])
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
    L_main = main.arclength[-1]
    total = s[-1]
    mid = rng.uniform(*frac_rng) * L_main
    factor = rng.uniform(1.0, 1.2)
    for _ in range(8):
        r_mid = np.interp(mid, s, rad) * factor
        cap = 4.0 / 3.0 * np.pi * r_mid ** 3
        length = max(1.0, (target_volume_mm3 - cap) / (np.pi * r_mid ** 2))
        if length <= min(total, L_main * 1.8):
            break
        factor *= 1.12
    length = min(length, total - 1.0)
    s0 = np.clip(mid - length / 2, 0.0, total - length)
    s1 = s0 + length
    t = np.arange(s0, s1 + 1e-9, 0.1)
    cpts = np.stack([np.interp(t, s, pts[:, i]) for i in range(3)], 1)
    # slightly irregular radius along the clot
    wob = 1.0 + 0.08 * np.sin(t / rng.uniform(2.0, 4.0) + rng.uniform(0, 6.28))
    crad = np.interp(t, s, rad) * factor * wob
    vol = float(np.sum(np.pi * crad[:-1] ** 2 * 0.1) + 4.0 / 3.0 * np.pi * crad[0] ** 3 / 2
                + 4.0 / 3.0 * np.pi * crad[-1] ** 3 / 2)
    # where flow stops: after the clot on the vessel that holds the clot end
    j_end = int(np.searchsorted(s, s1))
    j_end = min(j_end, len(pts) - 1)
    end_index = {pieces[owner[j_end]][0]: int(local[j_end])}
    if owner[j_end] == 0 and len(pieces) > 1:
        end_index[pieces[1][0]] = 0
    return Thrombus(site=site, vessel=key, hemisphere="midline" if vessel == "BA" else hemisphere, klass=klass,
                    pts=cpts, radius=crad, volume_mni_mm3=vol, end_index=end_index)


def flow_status(lines: dict[str, Polyline], thr: Thrombus) -> None:
    """Mark the arteries downstream of the clot as slow/no-flow (kind SLOW) in place."""
    stopped = set()
    for key, idx in thr.end_index.items():
        pl = lines[key]
        k = np.full(len(pl.pts), ARTERY)
        k[idx:] = SLOW
        pl.kind = k
        stopped.add(key)
    base_keys = list(thr.end_index)
    for key in base_keys:
        for d in _match(lines, descendants(key)):
            if d not in stopped and d != thr.vessel:
                # collateral-fed vessels (ACA via AComm after an ICA clot, PComm) keep flowing
                if thr.site == "ICA" and (d.startswith("A") or d.startswith("PCom")):
                    continue
                lines[d].kind = np.full(len(lines[d].pts), SLOW)


def to_cloud(lines: dict[str, Polyline], veins: dict[str, Polyline], microbleeds) -> VesselCloud:
    pts, rad, kind = [], [], []
    for pl in list(lines.values()) + list(veins.values()):
        pts.append(pl.pts)
        rad.append(pl.radius)
        kind.append(np.broadcast_to(np.asarray(pl.kind), (len(pl.pts),)))
    for c, r in microbleeds:
        pts.append(c[None])
        rad.append(np.array([r]))
        kind.append(np.array([MICROBLEED]))
    return VesselCloud(np.concatenate(pts), np.concatenate(rad), np.concatenate(kind).astype(np.int8),
                       {**lines, **veins})
