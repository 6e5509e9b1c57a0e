"""``thrombseg preprocess ...`` commands (hooked into thrombseg.cli via :func:`add_subparsers`).

    thrombseg preprocess subject INGEST_DIR SUBJECT OUT_DIR [--config C.yaml] [--backend B] [--threads N]
    thrombseg preprocess fit-landmarks PREPROC_DIR OUT.json --subjects S1 S2 ... | --sheet SHEET.tsv
    thrombseg preprocess harmonize PREPROC_DIR SUBJECT LANDMARKS.json OUT_DIR [--config C.yaml]
    thrombseg preprocess qc OUT.tsv PREPROC_JSON... [--center C]
    thrombseg preprocess skullstrip IMAGE OUT_MASK.nii.gz [--backend B] [--hdbet-weights DIR]
    thrombseg preprocess download-hdbet-weights [FOLDER]      (opt-in; the only network access)

``--config`` takes the workflow's YAML (its ``preprocess:`` section is used) or a YAML holding only
that section. Bad input exits with code 2 and one line naming the file and the problem.
Standalone: ``python -m thrombseg.preprocessing.cli ...`` (same commands without ``preprocess``).

Every stage module is imported inside the command that needs it, deliberately: ``thrombseg --help``
builds this parser and must not load ANTs or torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..core.fs import add_overwrite_option, check_output_file


def _load_config(path, backend=None, threads=None) -> dict:
    cfg: dict = {}
    if path:  # checked against the workflow schema (ConfigError: one line per problem)
        from ..config import is_workflow_config, load_config

        cfg = load_config(path, alone="preprocess")
        cfg = (cfg.get("preprocess") or {}) if is_workflow_config(cfg) else cfg
    cfg = dict(cfg)
    if backend:
        cfg["skullstrip"] = dict(cfg.get("skullstrip") or {}, backend=backend)
    if threads:
        cfg["threads"] = threads
    return cfg


def _cmd_subject(a) -> int:
    from .pipeline import preprocess_subject

    meta = preprocess_subject(a.ingest_dir, a.subject, a.out_dir, _load_config(a.config, a.backend, a.threads),
                              overwrite=a.overwrite)
    print(json.dumps({"subject": meta["subject"], "reference": meta["reference"],
                      "brain_volume_ml": meta["brain_volume_ml"], "timings_s": meta["timings_s"],
                      "warnings": meta["warnings"]}, indent=1))
    return 0


def _cmd_fit(a) -> int:
    from .harmonize import fit_landmarks
    from .settings import resolve_config

    check_output_file(a.out, a.overwrite, [a.sheet])
    subjects = list(a.subjects or [])
    if a.sheet:
        import pandas as pd

        df = pd.read_csv(a.sheet, sep="\t", dtype=str).fillna("")
        subjects += df.loc[df["split"] == a.split, "subject"].tolist()
    cfg = resolve_config(_load_config(a.config))["harmonize"]
    out = fit_landmarks(a.preproc_dir, subjects, a.out, cutoff=tuple(cfg["cutoff"]), nyul_skip=cfg["nyul_skip"])
    print(f"wrote {out} (fitted on {len(subjects)} subject(s))")
    return 0


def _cmd_harmonize(a) -> int:
    from .harmonize import harmonize_subject

    info = harmonize_subject(a.preproc_dir, a.subject, a.landmarks, a.out_dir, _load_config(a.config))
    print(json.dumps({"subject": info["subject"], "shape": info["shape"], "sequences": list(info["sequences"])}))
    return 0


def _cmd_qc(a) -> int:
    from .qc import write_center_qc

    check_output_file(a.out, a.overwrite, a.preproc_json)
    df = write_center_qc(a.preproc_json, a.out, center=a.center)
    print(f"wrote {a.out}: {len(df)} subject(s), {int(df['outlier'].sum()) if len(df) else 0} flagged")
    return 0


def _cmd_skullstrip(a) -> int:
    from ._io import atomic_write_nifti
    from .skullstrip import skull_strip

    check_output_file(a.out, a.overwrite, [a.image])
    mask, info = skull_strip(a.image, a.backend, hdbet_weights=a.hdbet_weights, device=a.device,
                             threads=a.threads, return_info=True)
    atomic_write_nifti(mask, a.out, dtype="uint8")
    print(json.dumps(info))
    return 0


def _cmd_download(a) -> int:
    from .skullstrip import download_hdbet_weights

    print(f"HD-BET weights in {download_hdbet_weights(a.folder)}")
    return 0


BACKENDS = ("deepbet", "ants", "hdbet")  # = skullstrip.BACKENDS; literal so `thrombseg --help` stays light


def _add_commands(sub) -> None:
    from ..core.errors import positive_int

    s = sub.add_parser("subject", help="preprocess one ingested patient")
    s.add_argument("ingest_dir", type=Path, help="ingest root (holding <subject>/) or the subject's folder")
    s.add_argument("subject")
    s.add_argument("out_dir", type=Path, help="output root; the patient goes to OUT_DIR/<subject>/")
    s.add_argument("--config", type=Path)
    s.add_argument("--backend", choices=BACKENDS, help="skull-strip backend (overrides the config)")
    s.add_argument("--threads", type=positive_int)
    add_overwrite_option(s)
    s.set_defaults(func=_cmd_subject)

    s = sub.add_parser("fit-landmarks", help="fit Nyul landmarks on training patients only")
    s.add_argument("preproc_dir", type=Path)
    s.add_argument("out", type=Path, help="landmarks JSON to write")
    add_overwrite_option(s, file=True)
    s.add_argument("--subjects", nargs="*", help="training subjects")
    s.add_argument("--sheet", type=Path, help="sample sheet: take subjects whose split is --split")
    s.add_argument("--split", default="train")
    s.add_argument("--config", type=Path)
    s.set_defaults(func=_cmd_fit)

    s = sub.add_parser("harmonize", help="apply landmarks + robust z-score; write .npy arrays")
    s.add_argument("preproc_dir", type=Path)
    s.add_argument("subject")
    s.add_argument("landmarks", type=Path)
    s.add_argument("out_dir", type=Path)
    s.add_argument("--config", type=Path)
    s.set_defaults(func=_cmd_harmonize)

    s = sub.add_parser("qc", help="per-center QC TSV from <subject>_preproc.json files")
    s.add_argument("out", type=Path)
    add_overwrite_option(s, file=True)
    s.add_argument("preproc_json", nargs="+", type=Path)
    s.add_argument("--center")
    s.set_defaults(func=_cmd_qc)

    s = sub.add_parser("skullstrip", help="brain mask of one image")
    s.add_argument("image", type=Path)
    s.add_argument("out", type=Path)
    add_overwrite_option(s, file=True)
    s.add_argument("--backend", choices=BACKENDS, default=None)
    s.add_argument("--hdbet-weights", type=Path)
    s.add_argument("--device", default="cpu")
    s.add_argument("--threads", type=positive_int)
    s.set_defaults(func=_cmd_skullstrip)

    s = sub.add_parser("download-hdbet-weights", help="opt-in: download HD-BET's weights (needs internet)")
    s.add_argument("folder", nargs="?", type=Path, default=None)
    s.set_defaults(func=_cmd_download)


def _run(args) -> int:
    from ..config import ConfigError
    from ._io import PreprocessingError

    if getattr(args, "func", None) is _cmd_skullstrip and args.backend is None:
        from .skullstrip import DEFAULT_BACKEND

        args.backend = DEFAULT_BACKEND
    try:
        return args.func(args)
    except (PreprocessingError, ConfigError) as exc:
        print(f"thrombseg preprocess: error: {exc}", file=sys.stderr)
        return 2


def add_subparsers(subparsers) -> argparse.ArgumentParser:
    """Add ``preprocess`` (with its sub-commands) to a ``thrombseg`` sub-parser collection."""
    p = subparsers.add_parser("preprocess", help="skull strip, co-register, N4, harmonise, QC",
                              description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="preprocess_command", required=True)
    _add_commands(sub)
    # thrombseg.cli calls args.func(args): route through _run for clean error messages
    for action in sub.choices.values():
        inner = action.get_default("func")
        action.set_defaults(func=_wrap(inner))
    return p


def _wrap(inner):
    def run(args):
        args.func = inner
        return _run(args)

    return run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m thrombseg.preprocessing.cli", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="preprocess_command", required=True)
    _add_commands(sub)
    return _run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
