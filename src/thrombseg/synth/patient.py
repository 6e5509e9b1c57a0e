"""One synthetic patient: anatomy, lesions, every acquisition of the center, masks and truth."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from . import render as R
from .atlas import get_atlas
from .centers import acquisition_grid
from .io import make_image, save_nifti, write_json
from .lesions import make_infarct, target_volume_ml, territories_for, territory_label
from .transform import PatientTransform
from .vessels import (OCCLUSION_SITES, build_arteries, build_veins, flow_status, place_thrombus,
                      sample_microbleeds, to_cloud)

# BIDS names of the sequences (file suffix, folder)
BIDS = {"swi": ("swi", "anat"), "phase": ("part-phase_swi", "anat"), "t2star": ("T2starw", "anat"),
        "flair": ("FLAIR", "anat"), "t1w": ("T1w", "anat"), "dwi": ("dwi", "dwi"), "adc": ("adc", "dwi")}
SHEET_COLUMN = {"swi": "swi", "phase": "phase", "t2star": "t2star", "dwi": "dwi", "adc": "adc", "flair": "flair",
                "t1w": "t1"}
DWI_NOISE_FACTOR = 2.0  # EPI is noisier than the anatomical scans


@dataclass
class SubjectTask:
    subject: str
    center: dict
    center_index: int
    index: int
    seed: int
    site: str
    low_contrast: bool
    size: str
    outdir: str


def _clot_volume_mm3(klass: str, rng: np.random.Generator) -> float:
    """World volume of the clot: real cohort means 232 mm^3 proximal, 77 mm^3 distal."""
    if klass == "proximal":
        return float(np.clip(rng.lognormal(np.log(175.0), 0.65), 40.0, 600.0))
    return float(np.clip(rng.lognormal(np.log(60.0), 0.6), 20.0, 250.0))


def _jitter(v: dict, rng: np.random.Generator, sd: float = 0.03) -> dict:
    return {k: (float(x) * (1.0 + rng.normal(0, sd)) if k != "iron" else float(x)) for k, x in v.items()}


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _canonical_slice(data: np.ndarray, affine: np.ndarray, world_pt: np.ndarray) -> np.ndarray:
    img = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(data, np.float32), affine))
    d = np.asarray(img.dataobj, np.float32)
    ijk = np.linalg.inv(img.affine) @ np.append(world_pt, 1.0)
    k = int(np.clip(np.round(ijk[2]), 0, d.shape[2] - 1))
    return d[:, :, k].T.copy(), img.affine, (ijk[:2]).tolist()


def make_subject(task: SubjectTask) -> dict:
    center = task.center
    outdir = Path(task.outdir)
    sid = task.subject
    ss = np.random.SeedSequence([task.seed, task.center_index, task.index, 20240])
    (r_pose, r_vessel, r_clot, r_lesion, r_protocol, r_grid, r_noise, r_contrast, r_demo) = [
        np.random.default_rng(s) for s in ss.spawn(9)]
    atlas = get_atlas()
    B0 = float(center["field_strength"])
    seqs = center["sequences"]
    sus = center["susceptibility"]

    # ---- anatomy and pathology in MNI space ------------------------------------------------------
    tf = PatientTransform.random(r_pose)
    jac = tf.jacobian_det  # MNI volume per world volume
    site = task.site
    klass = OCCLUSION_SITES[site][2]
    hemi = str(r_clot.choice(["L", "R"]))
    lines = build_arteries(atlas, r_vessel)
    clot_world = _clot_volume_mm3(klass, r_clot)
    thr = place_thrombus(lines, site, hemi, r_clot, clot_world * jac)
    flow_status(lines, thr)
    veins = build_veins(atlas, r_vessel)
    n_mb = int(r_lesion.choice(6, p=[0.35, 0.2, 0.15, 0.12, 0.1, 0.08]))
    mbs = sample_microbleeds(atlas, r_lesion, thr.pts, n_mb)
    cloud = to_cloud(lines, veins, mbs)
    codes = territories_for(site, thr.vessel, hemi, r_lesion)
    inf_target = target_volume_ml(klass, r_lesion)
    inf_field, n_pieces_drawn = make_infarct(atlas, r_lesion, codes, inf_target, jac, site)
    shell = R.Shell(csf_rim=float(r_pose.uniform(1.0, 2.5)), skull=float(r_pose.uniform(5.0, 8.0)),
                    scalp=float(r_pose.uniform(4.0, 7.0)))
    head_c = np.array([0.0, -17.0, 10.0])

    # ---- protocol: which series exist, contrast and scanner draws ----------------------------------
    present = [s for s in ("swi", "t2star", "phase", "dwi", "adc", "flair", "t1w") if s in seqs]
    miss = center.get("missing", {})
    u = r_protocol.random()
    lost = []
    acc = 0.0
    for key in ("dwi", "phase", "flair"):
        p = float(miss.get(key, 0.0))
        if p > 0 and acc <= u < acc + p and key in present:
            lost = ["dwi", "adc"] if key == "dwi" else [key]
        acc += p
    present = [s for s in present if s not in lost]
    hvs = bool(r_protocol.random() < (0.5 if klass == "proximal" else 0.3))
    clot_adc = float(r_protocol.uniform(0.45, 0.9))
    t2f = float(r_protocol.uniform(1.05, 1.2))
    adc_ratio = float(r_protocol.uniform(0.5, 0.7))
    flair_inf = float(r_protocol.uniform(0.05, 0.15))
    scale = float(center["intensity_scale"]) * float(r_protocol.lognormal(0.0, 0.15))
    bias_coefs = r_protocol.normal(0, [0.6, 0.6, 0.6, 0.4, 0.4, 0.4, 0.3, 0.3, 0.3])
    bg_coefs = r_protocol.normal(0, [1.0, 1.0, 1.0, 0.6, 0.6, 0.6, 0.4, 0.4, 0.4])
    bg_amp = float(r_protocol.uniform(2.0, 6.0))
    noise = float(center["noise"]) * float(r_protocol.uniform(0.8, 1.25))
    dtype = center["dtype"]

    row = {"subject": sid, "center": center["name"], "split": ""}
    for c in ("swi", "phase", "t2star", "dwi", "adc", "flair", "t1", "thrombus_mask", "lesion_mask"):
        row[c] = ""
    anat_dir = outdir / f"sub-{sid}" / "anat"
    dwi_dir = outdir / f"sub-{sid}" / "dwi"
    lab_dir = outdir / "derivatives" / "labels" / f"sub-{sid}"
    truth_dir = outdir / "derivatives" / "truth" / f"sub-{sid}"
    descrip = f"thrombseg synth {center['name']} sub-{sid}"
    montage: dict = {}
    grids: dict = {}
    written: dict = {}

    def out_path(seq):
        suffix, folder = BIDS[seq]
        return (anat_dir if folder == "anat" else dwi_dir) / f"sub-{sid}_{suffix}.nii.gz"

    def sidecar(seq, extra):
        q = seqs.get(seq) or {}
        meta = {"MagneticFieldStrength": B0, "Manufacturer": center.get("manufacturer", "Synthetic"),
                "InstitutionName": center["name"], "GeneratedBy": "thrombseg.synth"}
        if "echo_time_ms" in q:
            meta["EchoTime"] = q["echo_time_ms"] / 1000.0
        meta.update(extra)
        write_json(meta, out_path(seq).with_suffix("").with_suffix(".json"))

    def store(seq, data, aff, dt, scaled=False, extra=None):
        img = make_image(data, aff, dt, scaled=scaled, descrip=descrip)
        p = save_nifti(img, out_path(seq))
        sidecar(seq, extra or {})
        row[SHEET_COLUMN[seq]] = _rel(p, outdir)
        written[seq] = (np.asarray(img.dataobj, np.float32), aff)

    def grid_for(seq):
        z = float(seqs[seq].get("z_center_mni", 10.0))
        aim = head_c + np.array([r_grid.normal(0, 2.0), r_grid.normal(0, 3.0), z - head_c[2] + r_grid.normal(0, 3.0)])
        centre_w = tf.mni_to_world(aim[None])[0]
        aff, shape = acquisition_grid(center, seq, task.size, centre_w, r_grid)
        return R.Grid(aff, shape)

    def bias_on(grid, strength):
        f = R.polynomial_field(bias_coefs, tf.mni_to_world(head_c[None])[0])
        return np.exp(R.coarse_eval(grid, lambda w: strength * f(w))).astype(np.float32)

    inf_on = None  # (grid name) where the infarct mask is drawn
    inf_info = {}

    def infarct_mask(an, grid):
        m = (an.extra["infarct"] >= 0.5) & ((an.gm + an.wm) >= 0.3)
        lab, n = ndi.label(m, structure=np.ones((3, 3, 3)))
        vol_ml = float(m.sum() * np.prod(grid.spacing) / 1000.0)
        return m.astype(np.uint8), vol_ml, int(n)

    # ---- susceptibility grid: SWI / T2*-GRE (+ PHASE), thrombus mask, brain mask -------------------
    g = grid_for(sus)
    grids[sus] = g
    coords = tf.grid_to_mni(g.affine, g.shape)
    need_inf = "dwi" not in present and "flair" not in present
    an = R.sample_anatomy(atlas, coords, g, shell, extra=("brain_iron",),
                          infarct_field=inf_field if need_inf else None)
    v = _jitter(R.CONTRASTS[sus], r_contrast)
    ov = R.vessel_overlay(g, tf, coords, cloud)
    clot = R.thrombus_pv(g, tf, thr, coords)
    mag0 = R.tissue_mix(an, v)
    R.apply_overlay(mag0, ov, v)
    R.apply_clot(mag0, clot, v["clot_low"] if task.low_contrast else v["clot"])
    chi = (an.gm * R.CHI["gm"] + an.wm * R.CHI["wm"] + an.bone * R.CHI["bone"] + an.marrow * R.CHI["marrow"]
           + an.extra["iron"] * R.CHI["iron"])
    R.apply_overlay(chi, ov, R.CHI)
    R.apply_clot(chi, clot, R.CHI["clot_low"] if task.low_contrast else R.CHI["clot"])
    te = float(seqs[sus].get("echo_time_ms", 20.0)) / 1000.0
    kphase = 2 * np.pi * R.GAMMA_MHZ_T * B0 * te  # rad per ppm
    phi = R.dipole_field(chi, g)
    phi *= -kphase
    del chi
    mag0 *= R.dephasing(phi)
    mag0 *= bias_on(g, float(center["bias"]))
    mag0 *= scale
    f_bg = R.polynomial_field(bg_coefs, tf.mni_to_world(head_c[None])[0])
    phi += R.coarse_eval(g, lambda w: bg_amp * f_bg(w))
    sigma = noise * v["wm"] * scale
    re = np.cos(phi)
    re *= mag0
    re += r_noise.standard_normal(g.shape, dtype=np.float32) * sigma
    im = np.sin(phi)
    im *= mag0
    im += r_noise.standard_normal(g.shape, dtype=np.float32) * sigma
    del phi, mag0
    mag = np.hypot(re, im)
    lre = R.smooth_lowres(re, g.spacing, 5.0)
    lim = R.smooth_lowres(im, g.spacing, 5.0)
    filt = np.arctan2(im * lre - re * lim, re * lre + im * lim).astype(np.float32)
    raw = np.arctan2(im, re).astype(np.float32)
    del re, im, lre, lim
    if sus == "swi":
        pmask = np.where(filt < 0, 1.0 + filt / np.pi, 1.0).astype(np.float32)
        mag *= pmask ** 4
        del pmask
    store(sus, mag, g.affine, dtype, extra={"SeriesDescription": "SWI" if sus == "swi" else "T2* GRE"})
    if "phase" in present:
        pq = seqs["phase"]
        ph = filt if pq.get("kind") == "filtered" else raw
        if pq.get("storage") == "int":
            store("phase", ph * (4096.0 / np.pi), g.affine, "int16",
                  extra={"Units": "arbitrary (-4096..4095 = -pi..pi)", "PhaseKind": pq.get("kind")})
        else:
            store("phase", ph, g.affine, "int16", scaled=True, extra={"Units": "rad", "PhaseKind": pq.get("kind")})
    del raw, filt
    brain = (an.extra["brain"] >= 0.5).astype(np.uint8)
    vv = float(np.prod(g.spacing))
    tm = np.zeros(int(np.prod(g.shape)), np.uint8)
    idx, frac = clot
    sel = idx[frac >= 0.5]
    if len(sel) * vv < 0.5 * clot_world and len(idx):
        k = int(min(len(idx), max(1, round(clot_world / vv))))
        sel = idx[np.argsort(-frac, kind="stable")[:k]]
    tm[sel] = 1
    tm = tm.reshape(g.shape)
    thr_path = save_nifti(make_image(tm, g.affine, "uint8", descrip=descrip),
                          lab_dir / "anat" / f"sub-{sid}_label-thrombus_mask.nii.gz")
    row["thrombus_mask"] = _rel(thr_path, outdir)
    brain_path = save_nifti(make_image(brain, g.affine, "uint8", descrip=descrip),
                            truth_dir / f"sub-{sid}_desc-brain_mask.nii.gz")
    if need_inf:
        inf_on = sus
        m, vol, npc = infarct_mask(an, g)
        inf_info = dict(mask=m, vol=vol, n=npc, grid=g)
    # thrombus centroid (world) for the montage / truth
    tvox = np.argwhere(tm)
    thr_world = g.index_to_world(tvox.mean(0)[None])[0] if len(tvox) else tf.mni_to_world(thr.pts.mean(0)[None])[0]
    thr_mask_vol = float(tm.sum() * vv)
    montage["thr_mask"] = _canonical_slice(tm, g.affine, thr_world)[0]
    del an, coords, ov, brain

    # ---- diffusion: S0 and b1000 with Rician noise, ADC from their ratio ---------------------------
    if "dwi" in present:
        g = grids["dwi"] = grid_for("dwi")
        coords = tf.grid_to_mni(g.affine, g.shape)
        an = R.sample_anatomy(atlas, coords, g, shell, infarct_field=inf_field)
        vb0 = _jitter(R.CONTRASTS["b0"], r_contrast)
        vadc = _jitter(R.CONTRASTS["adc"], r_contrast, 0.02)
        vadc["clot"] = vadc["clot_low"] = clot_adc
        v1 = {k: vb0[k] * float(np.exp(-vadc[k])) for k in vb0 if k != "iron"}
        v1["iron"] = 0.0
        S0 = R.tissue_mix(an, vb0, iron_key=None)
        S1 = R.tissue_mix(an, v1, iron_key=None)
        finf = np.clip(an.extra["infarct"], 0, 1) * np.clip((an.gm + an.wm) * 1.5, 0, 1)
        S0 *= 1 + (t2f - 1) * finf
        S1 *= 1 + (t2f * np.exp(0.8 * (1 - adc_ratio)) - 1) * finf
        ov = R.vessel_overlay(g, tf, coords, cloud)
        clot_d = R.thrombus_pv(g, tf, thr, coords)
        R.apply_overlay(S0, ov, vb0)
        R.apply_overlay(S1, ov, v1)
        R.apply_clot(S0, clot_d, vb0["clot"])
        R.apply_clot(S1, clot_d, v1["clot"])
        b = bias_on(g, float(center["bias"]) * 0.8)
        sigma = noise * DWI_NOISE_FACTOR * v1["wm"]
        S0n = R.rician(S0 * b, sigma, r_noise)
        S1n = R.rician(S1 * b, sigma, r_noise)
        with np.errstate(divide="ignore", invalid="ignore"):
            adc = np.log(np.maximum(S0n, 1e-6) / np.maximum(S1n, 1e-6)) / 1000.0  # mm^2/s
        adc = np.clip(np.nan_to_num(adc, nan=0.0, posinf=0.0, neginf=0.0), 0.0, 4.095e-3)
        if center.get("adc_background") == "zero":
            adc[S0n < 0.15 * vb0["wm"]] = 0.0
        store("dwi", S1n * scale / v1["wm"] * 0.5, g.affine, dtype, extra={"bValue": 1000, "SeriesDescription":
                                                                      "DWI trace b1000"})
        if "adc" in present:
            aq = seqs["adc"]
            units = {1e6: "1e-6 mm2/s", 1e3: "1e-3 mm2/s", 1.0: "mm2/s"}.get(float(aq["scale"]), f"x{aq['scale']} mm2/s")
            store("adc", adc * float(aq["scale"]), g.affine, aq["dtype"],
                  extra={"Units": units, "Raw12bit": bool(center.get("adc_raw"))})
        m, vol, npc = infarct_mask(an, g)
        inf_on = "dwi"
        inf_info = dict(mask=m, vol=vol, n=npc, grid=g)
        del an, coords, ov, S0, S1, S0n, S1n, adc

    # ---- FLAIR / T1w ------------------------------------------------------------------------------
    for seq in ("flair", "t1w"):
        if seq not in present:
            continue
        g = grids[seq] = grid_for(seq)
        coords = tf.grid_to_mni(g.affine, g.shape)
        an = R.sample_anatomy(atlas, coords, g, shell, extra=("t1",) if seq == "t1w" else (),
                              infarct_field=inf_field)
        v = _jitter(R.CONTRASTS[seq], r_contrast)
        img = R.tissue_mix(an, v, iron_key=None)
        if seq == "t1w":  # real template texture inside the brain
            img += (an.extra["t1"] - (an.gm * 0.55 + an.wm * 0.8)) * np.clip((an.gm + an.wm) * 2, 0, 1)
        finf = np.clip(an.extra["infarct"], 0, 1) * np.clip((an.gm + an.wm) * 1.5, 0, 1)
        img *= 1 + (flair_inf if seq == "flair" else -0.05) * finf
        ov = R.vessel_overlay(g, tf, coords, cloud)
        R.apply_overlay(img, ov, v, slow_value=(0.85 if (hvs and seq == "flair") else None))
        R.apply_clot(img, R.thrombus_pv(g, tf, thr, coords), 0.8 if (hvs and seq == "flair") else v["clot"])
        img *= bias_on(g, float(center["bias"]))
        img = R.rician(img * scale, noise * v["wm"] * scale, r_noise)
        store(seq, img, g.affine, dtype, extra={"SeriesDescription": seq.upper()})
        if inf_on is None and seq == "flair":
            m, vol, npc = infarct_mask(an, g)
            inf_on = "flair"
            inf_info = dict(mask=m, vol=vol, n=npc, grid=g)
        del an, coords, ov, img

    # ---- infarct mask ----------------------------------------------------------------------------
    gi = inf_info["grid"]
    folder = "dwi" if inf_on == "dwi" else "anat"
    inf_path = save_nifti(make_image(inf_info["mask"], gi.affine, "uint8", descrip=descrip),
                          lab_dir / folder / f"sub-{sid}_label-infarct_mask.nii.gz")
    row["lesion_mask"] = _rel(inf_path, outdir)
    ivox = np.argwhere(inf_info["mask"])
    inf_world = gi.index_to_world(ivox.mean(0)[None])[0] if len(ivox) else thr_world

    # ---- truth ---------------------------------------------------------------------------------
    truth = {
        "subject": sid, "center": center["name"], "field_strength": B0,
        "artery_segment": site, "vessel": thr.vessel, "hemisphere": thr.hemisphere,
        "occlusion_class": klass, "territory": territory_label(codes), "territory_codes": codes,
        "thrombus_volume_mm3": thr_mask_vol, "thrombus_volume_true_mm3": thr.volume_mni_mm3 / jac,
        "thrombus_radius_mm": float(np.median(thr.radius)),
        "thrombus_centreline_mni": np.round(thr.pts[::10], 3).tolist() + [np.round(thr.pts[-1], 3).tolist()],
        "thrombus_centroid_world": thr_world,
        "low_contrast": bool(task.low_contrast), "hyperintense_vessel_sign": hvs,
        "infarct_volume_ml": inf_info["vol"], "infarct_n_pieces": inf_info["n"],
        "infarct_n_pieces_drawn": n_pieces_drawn, "infarct_target_volume_ml": inf_target,
        "infarct_mask_grid": inf_on,
        "n_microbleeds": len(mbs), "microbleeds_mni": [np.round(c, 2).tolist() for c, _ in mbs],
        "sequences": [s for s in present], "missing_sequences": lost,
        "grids": {k: {"shape": list(gg.shape), "spacing": np.round(gg.spacing, 6).tolist(),
                      "orientation": "".join(nib.aff2axcodes(gg.affine))} for k, gg in grids.items()},
        "skull_mm": {"csf_rim": shell.csf_rim, "skull": shell.skull, "scalp": shell.scalp},
        "intensity_scale": scale, "noise": noise,
        "world_to_mni": tf.to_dict(),
        "files": {k: row[k] for k in row if k not in ("subject", "center", "split") and row[k]}
        | {"brain_mask": _rel(brain_path, outdir)},
    }
    write_json(truth, truth_dir / f"sub-{sid}_truth.json")

    # ---- montage material (2-D slices, small) ----------------------------------------------------
    panels = {}
    for seq, (data, aff) in written.items():
        pt = thr_world if seq in ("swi", "t2star", "phase") else inf_world
        panels[seq] = _canonical_slice(data, aff, pt)
    montage["panels"] = panels
    age = int(np.clip(r_demo.normal(72, 12), 30, 97))
    sex = str(r_demo.choice(["F", "M"]))
    participant = {"participant_id": f"sub-{sid}", "center": center["name"], "age": age, "sex": sex,
                   "field_strength": B0, "manufacturer": center.get("manufacturer", "Synthetic")}
    return {"row": row, "participant": participant, "truth": truth, "montage": montage}
