"""Bad and hostile inputs through the real commands: does thrombseg refuse clearly and keep user data?

    .venv/bin/python benchmarks/hostile.py [--quick] [--keep DIR]

Builds about 50 bad or hostile inputs (sheets, images, headers, model files, configs, output folders,
an interrupted run) in a temporary folder, runs each through the real command (``thrombseg ...`` or
``snakemake -n``) in its own process, and prints one row per case: exit code, the first line of
the error, and a verdict:

- clear error: non-zero exit, the expected problem named in one line, no traceback;
- handled: exit 0 and the expected result (an unusual but valid input);
- traceback / wrong (exit 0 where it must fail, or a misleading message) / data lost (a file that
  was there before, or a file given as input, is missing or changed afterwards).

Exit code 1 when any row is not "clear error" or "handled". Run time on 2 CPU cores: about 6 minutes
(each case starts a process: 3-6 s; 349-371 s measured with other jobs running); ``--quick`` runs 15
cases, one or two of each kind, and kills ``thrombseg synth`` before its first cohort instead of over
an existing one: about 1.5 minutes.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import torch
import yaml
from _common import ROOT, header

from thrombseg.core.fs import write_manifest
from thrombseg.models.checkpoint import build_network
from thrombseg.sheet import COLUMNS
from thrombseg.training.config import TrainConfig

BIN = Path(sys.executable).parent
THROMBSEG = [str(BIN / "thrombseg")]
SNAKEMAKE_N = [sys.executable, "-m", "snakemake", "-n", "-s", str(ROOT / "Snakefile"),
               "--configfile", str(ROOT / "config" / "config.yaml")]


# --quick runs one or two cases of each kind (every numbered point of the safety issue)
QUICK = ("sheet: header bomb (claims 1000^3 float32)", "sheet: zero voxel size", "sheet: all zero image",
         "sheet: row with more fields than the header", "ingest OUT=. (the data folder)",
         "ingest OUT=the sheet's own folder", "ingest subject ../../etc (path traversal)",
         "ingest into a previous output holding a user's file, --overwrite",
         "predict --model that runs code when unpickled",
         "predict --overwrite into an earlier prediction holding an annotation",
         "snakemake -n --config centres=[ctrB] (typo)", "snakemake -n: epochs -5", "thrombseg train with epochs 0",
         "evaluate a non-binary prediction")


@dataclass
class Case:
    """One hostile input: the command, what must happen, and the files that must survive it."""

    name: str
    argv: list
    expect: str = "error"  # "error" | "ok"
    needle: str = ""  # must appear in the error line (what the user needs to be told)
    cwd: Path | None = None
    keep: list = field(default_factory=list)  # folders/files whose content must be unchanged
    check: object = None  # () -> "" if the outcome is right, else why not


# --------------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------------
def nifti(path: Path, data, zooms=(1.0, 1.0, 1.0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), np.diag([*zooms, 1.0])), str(path))
    return path


def sheet(path: Path, rows: list[dict], header_cols=COLUMNS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(header_cols)] + ["\t".join(str(r.get(c, "")) for c in header_cols) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def header_bomb(path: Path, shape=(1000, 1000, 1000)) -> Path:
    """A few KB of .nii.gz whose header claims a huge float32 volume."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(np.float32)
    hdr.set_zooms((1.0, 1.0, 1.0))
    hdr["vox_offset"] = 352
    raw = hdr.binaryblock + b"\0" * 4 + b"\0" * 4096
    path.write_bytes(gzip.compress(raw))
    return path


def zero_zoom(path: Path) -> Path:
    img = nib.Nifti1Image(np.random.default_rng(0).random((8, 8, 8)).astype(np.float32), np.eye(4))
    img.header["pixdim"][1:4] = [0.0, 1.0, 1.0]
    nib.save(img, str(path))
    return path


class RunsCode:
    """Unpickling calls open(path, 'w'): stands for any code a crafted checkpoint could run."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def snapshot(paths) -> dict:
    """Path -> sha256 of every file under ``paths`` (what must survive a case)."""
    out = {}
    for p in paths:
        p = Path(p)
        files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else []
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def build(ws: Path) -> list[Case]:
    """Every hostile case, with the files and folders it needs written under ``ws``."""
    fx = SimpleNamespace(ws=ws)
    _write_sheets(fx)
    _write_models(fx)
    _write_user_folders(fx)
    _write_configs(fx)
    return [*_sheet_cases(fx), *_ingest_cases(fx), *_predict_cases(fx), *_config_cases(fx), *_other_cases(fx)]


def _write_sheets(fx: SimpleNamespace) -> None:
    """Good and broken images and the sample sheets that name them."""
    ws = fx.ws
    rng = np.random.default_rng(0)
    vol = (rng.random((12, 12, 12)) * 100 + 10).astype(np.float32)
    data = ws / "data"
    good = {"swi": nifti(data / "swi.nii.gz", vol), "dwi": nifti(data / "dwi.nii.gz", vol * 0.5)}
    mask = np.zeros((12, 12, 12), np.uint8)
    mask[5:7, 5:7, 5:7] = 1
    nifti(data / "thr.nii.gz", mask)
    row = {"subject": "p1", "center": "c", "swi": "swi.nii.gz", "dwi": "dwi.nii.gz", "thrombus_mask": "thr.nii.gz"}
    ok_sheet = sheet(data / "sheet.tsv", [row])
    (data / "notes.txt").write_text("a user's notes beside the data\n")

    bad = ws / "bad"
    nifti(bad / "nonbinary.nii.gz", mask * 0.5 + (mask > 0) * 0.3)
    nifti(bad / "fourd.nii.gz", np.stack([vol, vol], -1))
    nan = vol.copy()
    nan[3, 3, 3] = np.nan
    nifti(bad / "nan.nii.gz", nan)
    nifti(bad / "zeros.nii.gz", np.zeros((12, 12, 12), np.float32))
    (bad / "corrupt.nii.gz").write_bytes(os.urandom(2048))
    header_bomb(bad / "bomb.nii.gz")
    zero_zoom(bad / "zerozoom.nii.gz")
    nifti(bad / "othergrid.nii.gz", np.zeros((10, 12, 12), np.uint8))
    big = bad / "sheets"
    sheets = {
        "missing_file": sheet(big / "missing.tsv", [row | {"swi": "nowhere.nii.gz"}]),
        "unknown_column": sheet(big / "unknown.tsv", [row], COLUMNS + ("age",)),
        "duplicate_ids": sheet(big / "dup.tsv", [row, row]),
        "traversal_id": sheet(big / "trav.tsv", [row | {"subject": "../../etc"}]),
        "nonbinary_mask": sheet(big / "nb.tsv", [row | {"thrombus_mask": "../nonbinary.nii.gz"}]),
        "four_d": sheet(big / "4d.tsv", [row | {"swi": "../fourd.nii.gz"}]),
        "nan_voxels": sheet(big / "nan.tsv", [row | {"swi": "../nan.nii.gz"}]),
        "all_zero_image": sheet(big / "zeros.tsv", [row | {"dwi": "../zeros.nii.gz"}]),
        "corrupt_gz": sheet(big / "corrupt.tsv", [row | {"swi": "../corrupt.nii.gz"}]),
        "header_bomb": sheet(big / "bomb.tsv", [row | {"swi": "../bomb.nii.gz"}]),
        "zero_voxel_size": sheet(big / "zz.tsv", [row | {"swi": "../zerozoom.nii.gz"}]),
        "mask_wrong_grid": sheet(big / "grid.tsv", [row | {"thrombus_mask": "../othergrid.nii.gz"}]),
    }
    for name in ("missing_file", "nonbinary_mask", "four_d", "nan_voxels", "all_zero_image", "corrupt_gz",
                 "header_bomb", "zero_voxel_size", "mask_wrong_grid"):
        for f in ("swi", "dwi", "thr"):
            link = sheets[name].parent / f"{f}.nii.gz"
            if not link.exists():
                link.write_bytes((data / f"{f}.nii.gz").read_bytes())
    extra = big / "extra_field.tsv"
    extra.write_text(ok_sheet.read_text().rstrip("\n") + "\tsurplus\n")
    (big / "empty.tsv").write_text("")
    (big / "binary.tsv").write_bytes(os.urandom(512))
    for f in ("swi", "dwi", "thr"):
        (big / f"{f}.nii.gz").write_bytes((data / f"{f}.nii.gz").read_bytes())

    fx.__dict__.update(data=data, good=good, row=row, ok_sheet=ok_sheet, bad=bad, big=big, sheets=sheets, extra=extra)


def _write_models(fx: SimpleNamespace) -> None:
    """A good, a code-running, a truncated and a foreign model file, and landmarks for predict."""
    ws, good = fx.ws, fx.good
    models = ws / "models"
    models.mkdir()
    cfg = TrainConfig.from_dict({"model": "unet25d", "modalities": ["swi", "dwi"], "model_kwargs": {"widths": [4, 8]}})
    torch.save({"model": build_network(cfg).state_dict(), "config": cfg.to_dict()}, models / "model.pt")
    marker = ws / "CODE_RAN"
    torch.save({"model": RunsCode(str(marker)), "config": {}}, models / "evil.pt")
    (models / "truncated.pt").write_bytes((models / "model.pt").read_bytes()[:200])
    torch.save({"weights": torch.zeros(3)}, models / "foreign.pt")
    lmk = models / "landmarks.json"
    lmk.write_text(json.dumps({"landmarks": {s: list(np.linspace(0, 100, 11)) for s in ("swi", "dwi")}}))
    predict = THROMBSEG + ["predict"]
    inputs = ["--swi", str(good["swi"]), "--dwi", str(good["dwi"]), "--landmarks", str(lmk), "--device", "cpu"]

    fx.__dict__.update(models=models, marker=marker, lmk=lmk, predict=predict, inputs=inputs)


def _write_user_folders(fx: SimpleNamespace) -> None:
    """Folders a user already has: one of their own, and earlier outputs (one with a file added since)."""
    ws = fx.ws
    user = ws / "user_folder"
    user.mkdir()
    (user / "annotation.nii.gz").write_bytes(b"days of work")
    prev = ws / "previous_output"
    prev.mkdir()
    (prev / "p1_thrombus_mask.nii.gz").write_bytes(b"old output")
    write_manifest(prev, "predict")
    (prev / "my_annotation.nii.gz").write_bytes(b"added by the user afterwards")
    prev_clean = ws / "previous_clean"
    prev_clean.mkdir()
    (prev_clean / "p1_ingest.json").write_text("{}")
    write_manifest(prev_clean, "ingest")

    fx.__dict__.update(user=user, prev=prev, prev_clean=prev_clean)


def _write_configs(fx: SimpleNamespace) -> None:
    """Broken config files and the folders the config cases run in."""
    ws = fx.ws
    cfgs = ws / "configs"
    cfgs.mkdir()

    (cfgs / "syntax.yaml").write_text("training:\n  defaults: {epochs: 3\n  bad: [\n")
    smk = ws / "smk"
    smk.mkdir()
    # a workflow config with a broken training section, for `thrombseg train`
    base = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    base["training"]["defaults"]["epochs"] = 0
    (cfgs / "epochs0_full.yaml").write_text(yaml.safe_dump(base))
    fx.__dict__.update(cfgs=cfgs, smk=smk, train_out=ws / "train_out")


def _override(fx: SimpleNamespace, name: str, section: dict) -> str:
    """A config file holding ``section`` only."""
    p = fx.cfgs / f"{name}.yaml"
    p.write_text(yaml.safe_dump(section))
    return str(p)


def _sheet_cases(fx: SimpleNamespace) -> list[Case]:
    """Broken sample sheets given to `thrombseg validate`, and a valid one."""
    ws, big, sheets, extra, data, ok_sheet = fx.ws, fx.big, fx.sheets, fx.extra, fx.data, fx.ok_sheet
    return [
        # ---- sample sheets ---------------------------------------------------------------------
        *[Case(f"sheet: {n.replace('_', ' ')}", THROMBSEG + ["validate", str(p)], needle=needle, keep=[big])
          for n, p, needle in [
              ("missing_file", sheets["missing_file"], "nowhere.nii.gz"),
              ("unknown_column", sheets["unknown_column"], "age"),
              ("duplicate_ids", sheets["duplicate_ids"], "p1"),
              ("traversal_id", sheets["traversal_id"], "subject"),
              ("nonbinary_mask", sheets["nonbinary_mask"], "nonbinary.nii.gz"),
              ("four_d", sheets["four_d"], "fourd.nii.gz"),
              ("nan_voxels", sheets["nan_voxels"], "nan.nii.gz"),
              ("all_zero_image", sheets["all_zero_image"], "zeros.nii.gz"),
              ("corrupt_gz", sheets["corrupt_gz"], "corrupt.nii.gz"),
              ("header_bomb (claims 1000^3 float32)", sheets["header_bomb"], "bomb.nii.gz"),
              ("zero_voxel_size", sheets["zero_voxel_size"], "zerozoom.nii.gz"),
              ("mask_wrong_grid", sheets["mask_wrong_grid"], "othergrid.nii.gz"),
          ]],
        Case("sheet: row with more fields than the header", THROMBSEG + ["validate", str(extra)],
             needle="extra_field.tsv"),
        Case("sheet: empty file", THROMBSEG + ["validate", str(big / "empty.tsv")], needle="empty.tsv"),
        Case("sheet: binary garbage", THROMBSEG + ["validate", str(big / "binary.tsv")], needle="binary.tsv"),
        Case("sheet: not found", THROMBSEG + ["validate", str(ws / "nope.tsv")], needle="nope.tsv"),
        Case("sheet: a folder", THROMBSEG + ["validate", str(data)], needle=str(data)),
        Case("sheet: valid (control)", THROMBSEG + ["validate", str(ok_sheet)], expect="ok", keep=[data]),
    ]


def _ingest_cases(fx: SimpleNamespace) -> list[Case]:
    """Ingest into folders it must never replace, and with hostile subject ids."""
    ws, ok_sheet, data, user, prev, prev_clean = fx.ws, fx.ok_sheet, fx.data, fx.user, fx.prev, fx.prev_clean
    sheets = fx.sheets
    big = fx.big
    return [
        # ---- ingest and output folders ----------------------------------------------------------
        Case("ingest OUT=. (the data folder)", THROMBSEG + ["ingest", str(ok_sheet), "p1", "."], cwd=data,
             needle="refusing", keep=[data]),
        Case("ingest OUT=. --overwrite", THROMBSEG + ["ingest", str(ok_sheet), "p1", ".", "--overwrite"],
             cwd=data, needle="refusing", keep=[data]),
        Case("ingest OUT=the sheet's own folder", THROMBSEG + ["ingest", str(ok_sheet), "p1", str(data)],
             needle="holds an input", keep=[data]),
        Case("ingest OUT=a user's folder", THROMBSEG + ["ingest", str(ok_sheet), "p1", str(user)],
             needle="not written by thrombseg", keep=[user]),
        Case("ingest OUT=a user's folder --overwrite",
             THROMBSEG + ["ingest", str(ok_sheet), "p1", str(user), "--overwrite"],
             needle="not written by thrombseg", keep=[user]),
        Case("ingest subject ../../etc (path traversal)",
             THROMBSEG + ["ingest", str(sheets["traversal_id"]), "../../etc", str(ws / "ingest_trav")],
             needle="not allowed in file names", keep=[big],
             check=lambda: "" if not (ws.parent / "etc").exists() and not (ws / "ingest_trav").exists()
             else "wrote outside the output folder"),
        Case("ingest into a previous output (no --overwrite)",
             THROMBSEG + ["ingest", str(ok_sheet), "p1", str(prev_clean)], needle="--overwrite", keep=[prev_clean]),
        Case("ingest into a previous output holding a user's file, --overwrite",
             THROMBSEG + ["ingest", str(ok_sheet), "p1", str(prev), "--overwrite"],
             needle="my_annotation.nii.gz", keep=[prev]),
        Case("ingest into a previous output, --overwrite (valid)",
             THROMBSEG + ["ingest", str(ok_sheet), "p1", str(prev_clean), "--overwrite"], expect="ok",
             keep=[data], check=lambda: "" if (prev_clean / "p1_swi.nii.gz").is_file() else "not replaced"),
        Case("ingest OUT below a file", THROMBSEG + ["ingest", str(ok_sheet), "p1", str(data / "notes.txt" / "o")],
             needle="not a folder", keep=[data]),
        Case("ingest OUT in a read-only place", THROMBSEG + ["ingest", str(ok_sheet), "p1", "/proc/thrombseg_out"],
             needle="/proc/thrombseg_out"),
        Case("ingest subject not in the sheet", THROMBSEG + ["ingest", str(ok_sheet), "p9", str(ws / "i9")],
             needle="p9"),
    ]


def _predict_cases(fx: SimpleNamespace) -> list[Case]:
    """Hostile model files, inputs, output folders and configs given to `thrombseg predict`."""
    ws, models, predict, inputs, lmk = fx.ws, fx.models, fx.predict, fx.inputs, fx.lmk
    user, prev, data, bad, good, ok_sheet, cfgs = fx.user, fx.prev, fx.data, fx.bad, fx.good, fx.ok_sheet, fx.cfgs
    marker = fx.marker

    def code_not_run():
        return "" if not marker.exists() else "the model file's code ran"

    def override(name, section):
        return _override(fx, name, section)

    return [
        # ---- model files and predict ------------------------------------------------------------
        Case("predict --model that runs code when unpickled",
             predict + [str(ws / "pred_evil"), "--model", str(models / "evil.pt")] + inputs,
             needle="never runs code", check=code_not_run),
        Case("predict --model truncated", predict + [str(ws / "pred_t"), "--model", str(models / "truncated.pt")] + inputs,
             needle="truncated.pt"),
        Case("predict --model not a thrombseg model",
             predict + [str(ws / "pred_f"), "--model", str(models / "foreign.pt")] + inputs, needle="foreign.pt"),
        Case("predict --model missing", predict + [str(ws / "pred_m"), "--model", str(models / "nope.pt")] + inputs,
             needle="nope.pt"),
        Case("predict into a user's folder", predict + [str(user), "--model", str(models / "model.pt")] + inputs,
             needle="not written by thrombseg", keep=[user]),
        Case("predict --overwrite into an earlier prediction holding an annotation",
             predict + [str(prev), "--model", str(models / "model.pt"), "--overwrite"] + inputs,
             needle="my_annotation.nii.gz", keep=[prev]),
        Case("predict OUT=. in the data folder", predict + [".", "--model", str(models / "model.pt")] + inputs,
             cwd=data, needle="refusing", keep=[data]),
        Case("predict --subject ../x", predict + [str(ws / "pred_s"), "--model", str(models / "model.pt"),
                                                  "--subject", "../x"] + inputs, needle="not allowed in file names"),
        Case("predict --threads 0", predict + [str(ws / "pred_th"), "--model", str(models / "model.pt"),
                                               "--threads", "0"] + inputs, needle="must be at least 1"),
        Case("predict --swi header bomb",
             predict + [str(ws / "pred_b"), "--model", str(models / "model.pt"), "--landmarks", str(lmk),
                        "--swi", str(bad / "bomb.nii.gz"), "--dwi", str(good["dwi"])], needle="bomb.nii.gz"),
        Case("predict --landmarks not a landmarks file",
             predict + [str(ws / "pred_l"), "--model", str(models / "model.pt"), "--swi", str(good["swi"]),
                        "--landmarks", str(ok_sheet)], needle="sheet.tsv"),
        Case("predict --config with a YAML syntax error",
             predict + [str(ws / "pred_y"), "--model", str(models / "model.pt"), "--config",
                        str(cfgs / "syntax.yaml")] + inputs, needle="syntax.yaml"),
        Case("predict --config with threshold 7",
             predict + [str(ws / "pred_t7"), "--model", str(models / "model.pt"), "--config",
                        override("thr7", {"inference": {"threshold": 7}})] + inputs, needle="threshold"),
    ]


def _config_cases(fx: SimpleNamespace) -> list[Case]:
    """Bad configs: checked before anything runs, by Snakemake and by `thrombseg train`."""
    ws, smk, cfgs, train_out = fx.ws, fx.smk, fx.cfgs, fx.train_out

    def no_model():
        return "" if not (train_out / "model.pt").exists() else "a model was written"

    def override(name, section):
        return _override(fx, name, section)

    return [
        # ---- configuration checked before anything runs -----------------------------------------
        Case("snakemake -n --config centres=[ctrB] (typo)",
             SNAKEMAKE_N + ["--directory", str(smk), "--config", "centres=[ctrB]"], needle="centres"),
        Case("snakemake -n: epochs -5", SNAKEMAKE_N + ["--directory", str(smk), "--configfile",
                                                       override("em5", {"training": {"defaults": {"epochs": -5}}})],
             needle="epochs"),
        Case("snakemake -n: epochs 'forty'",
             SNAKEMAKE_N + ["--directory", str(smk), "--configfile",
                            override("e40", {"training": {"defaults": {"epochs": "forty"}}})], needle="epochs"),
        Case("snakemake -n: epochs 0", SNAKEMAKE_N + ["--directory", str(smk), "--configfile",
                                                      override("e0", {"training": {"defaults": {"epochs": 0}}})],
             needle="epochs"),
        Case("snakemake -n: inference.threshold 7",
             SNAKEMAKE_N + ["--directory", str(smk), "--configfile", override("t7", {"inference": {"threshold": 7}})],
             needle="threshold"),
        Case("snakemake -n: unknown key under preprocess",
             SNAKEMAKE_N + ["--directory", str(smk), "--configfile",
                            override("pk", {"preprocess": {"skulstrip": {"backend": "ants"}}})], needle="skulstrip"),
        Case("snakemake -n: unknown key under training",
             SNAKEMAKE_N + ["--directory", str(smk), "--configfile",
                            override("tk", {"training": {"defualts": {"epochs": 3}}})], needle="defualts"),
        # Snakemake parses --configfile before the Snakefile runs: its own message, without the file name
        Case("snakemake -n: YAML syntax error (Snakemake's own line, no file name)",
             SNAKEMAKE_N + ["--directory", str(smk), "--configfile", str(cfgs / "syntax.yaml")],
             needle="not valid JSON or YAML"),
        Case("thrombseg train with epochs 0",
             THROMBSEG + ["train", str(ws / "nowhere_h"), str(ws / "nowhere.tsv"), str(train_out),
                          "--config", str(cfgs / "epochs0_full.yaml")], needle="epochs", check=no_model),
    ]


def _other_cases(fx: SimpleNamespace) -> list[Case]:
    """Evaluation inputs and the synthetic cohort command."""
    bad, data, user = fx.bad, fx.data, fx.user
    return [
        # ---- evaluation ---------------------------------------------------------------------------
        Case("evaluate a non-binary prediction",
             THROMBSEG + ["evaluate", str(bad / "nonbinary.nii.gz"), str(data / "thr.nii.gz")], needle="nonbinary.nii.gz"),
        Case("evaluate masks on different grids",
             THROMBSEG + ["evaluate", str(bad / "othergrid.nii.gz"), str(data / "thr.nii.gz")], needle="othergrid.nii.gz"),
        Case("evaluate a binary prediction (control)",
             THROMBSEG + ["evaluate", str(data / "thr.nii.gz"), str(data / "thr.nii.gz")], expect="ok"),
        # ---- synthetic cohort ---------------------------------------------------------------------
        Case("synth into a user's folder", THROMBSEG + ["synth", str(user), "--n-per-center", "1"],
             needle="not written by thrombseg", keep=[user]),
    ]


def interrupted_synth(ws: Path, quick: bool) -> list[dict]:
    """``thrombseg synth`` killed mid-run: the folder holds the previous cohort (or nothing), never a mix."""
    rows = []
    out = ws / "cohort"
    if not quick:
        subprocess.run(THROMBSEG + ["synth", str(out), "--n-per-center", "1", "--seed", "0"], check=True,
                       capture_output=True, timeout=600)
    before = snapshot([out])
    cmd = THROMBSEG + ["synth", str(out), "--n-per-center", "1", "--seed", "1", "--overwrite"]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(6)
    p.send_signal(signal.SIGKILL)
    p.wait()
    after = snapshot([out])
    same = after == before
    leftovers = [q.name for q in ws.iterdir() if q.name.startswith(".cohort.")]
    name = "synth killed over an existing cohort" if not quick else "synth killed before its first cohort"
    verdict = "handled" if same else "data lost" if set(before) - set(after) else "wrong"
    rows.append({"case": name, "rc": p.returncode, "first line": f"folder {'unchanged' if same else 'CHANGED'}"
                 f"; marked temp folders left beside it: {len(leftovers)} (the next run of the step clears them)",
                 "verdict": verdict})
    return rows


def run(case: Case, ws: Path) -> dict:
    before = snapshot(case.keep)
    env = dict(os.environ, SLURM_CONF="/nonexistent")
    t0 = time.perf_counter()
    try:
        p = subprocess.run(case.argv, cwd=case.cwd or ws, env=env, capture_output=True, text=True, timeout=300,
                           stdin=subprocess.DEVNULL)
        rc, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired:
        rc, out, err = None, "", "timed out after 300 s"
    secs = time.perf_counter() - t0
    text = out + err
    lines = [ln.strip() for ln in (err + "\n" + out).splitlines() if ln.strip()]  # snakemake: stdout
    # the line that names the problem (snakemake wraps ours in its own; validate lists every problem)
    named = [ln for ln in lines if case.needle and case.needle in ln]
    first = (named or lines or [""])[0] if rc != 0 else (out.strip().splitlines() or [""])[0]
    lost = [f for f, h in before.items() if not Path(f).is_file() or snapshot([f]).get(f) != h]
    extra = case.check() if case.check else ""
    if lost:
        verdict = "data lost"
    elif "Traceback" in text:
        verdict = "traceback"
    elif case.expect == "ok":
        verdict = "handled" if rc == 0 and not extra else "wrong"
    elif rc in (0, None) or extra or (case.needle and not named):
        verdict = "wrong"
    else:
        verdict = "clear error"
    if extra:
        first = f"{first} [{extra}]"
    if lost:
        first = f"{first} [lost: {', '.join(Path(f).name for f in lost[:3])}]"
    return {"case": case.name, "rc": rc, "first line": first.replace(str(ws), "<tmp>")[:150],
            "verdict": verdict, "seconds": round(secs, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="15 cases, one or two of each kind; synth killed before its first cohort")
    ap.add_argument("--keep", type=Path, help="build the cases in this (new) folder and keep it")
    ap.add_argument("--out", type=Path, help="also write the table as TSV in this folder")
    a = ap.parse_args(argv)
    header(itk_threads="not used")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="thrombseg-hostile-") as tmp:
        ws = a.keep.resolve() if a.keep else Path(tmp)
        ws.mkdir(parents=True, exist_ok=True)
        cases = [c for c in build(ws) if not a.quick or c.name in QUICK]
        rows = [run(c, ws) for c in cases]
        rows += interrupted_synth(ws, a.quick)
    import pandas as pd

    df = pd.DataFrame(rows)
    pd.set_option("display.max_colwidth", 150)
    pd.set_option("display.width", 250)
    print(df[["case", "rc", "verdict", "first line"]].to_string(index=False))
    counts = df["verdict"].value_counts().to_dict()
    print(f"\ntotal: {len(df)} cases in {time.perf_counter() - t0:.0f} s: "
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if a.out:
        from _common import write_tsv

        write_tsv(df, a.out / "hostile.tsv")
    return 0 if set(counts) <= {"clear error", "handled"} else 1


if __name__ == "__main__":
    sys.exit(main())
