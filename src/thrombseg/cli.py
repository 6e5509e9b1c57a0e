"""The ``thrombseg`` command line: every stage without Snakemake.

Expected user errors (bad sheets, unreadable files) print one clear message and exit with code 2;
anything else is a bug and keeps its traceback. The error types of the stages that load ANTs or
torch are imported only once a command has failed (:func:`_user_errors`), deliberately: the
commands that never touch those stages stay fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .core.fs import add_overwrite_option, check_output_file
from .evaluation import cli as evaluation_cli
from .inference import cli as inference_cli
from .inference.settings import InferenceError
from .ingest import ingest_from_sheet
from .preprocessing import cli as preprocessing_cli
from .sheet import sheet_from_bids, validate_sheet
from .smk import USER_ERRORS
from .synth import generate_cohort
from .training import cli as training_cli

STAGE_CLIS = (preprocessing_cli, training_cli, inference_cli, evaluation_cli)  # each adds its subcommands


def _cmd_validate(args) -> int:
    df = validate_sheet(args.sheet, centers=args.centers or None, check_images=not args.quick)
    counts = df.groupby("center").size().to_dict()
    print(f"{args.sheet}: OK, {len(df)} subject(s) in {len(counts)} center(s): "
          + ", ".join(f"{c} ({n})" for c, n in counts.items()))
    return 0


def _cmd_sheet_from_bids(args) -> int:
    check_output_file(args.output, args.overwrite)
    df = sheet_from_bids(args.bids_dir, args.output)
    print(f"wrote {args.output}: {len(df)} subject(s)")
    return 0


def _cmd_synth(args) -> int:
    sheet = generate_cohort(args.outdir, n_per_center=args.n_per_center, seed=args.seed,
                            size=args.size, n_jobs=args.jobs, overwrite=args.overwrite,
                            negative_share=args.negative_share)
    print(f"wrote synthetic cohort; sample sheet: {sheet}")
    return 0


def _cmd_ingest(args) -> int:
    side = ingest_from_sheet(args.sheet, args.subject, args.outdir, overwrite=args.overwrite)
    print(json.dumps({k: side[k] for k in ("subject", "center")} |
                     {"sequences": sorted(side["sequences"]), "labels": sorted(side["labels"]),
                      "warnings": side["warnings"]}, indent=1))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="thrombseg", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("validate", help="validate a sample sheet (every problem at once)")
    s.add_argument("sheet", type=Path)
    s.add_argument("--centers", nargs="*", help="centers that must have subjects")
    s.add_argument("--quick", action="store_true", help="structure and file existence only")
    s.set_defaults(func=_cmd_validate)

    s = sub.add_parser("sheet-from-bids", help="write a sample sheet from a BIDS tree")
    s.add_argument("bids_dir", type=Path)
    s.add_argument("-o", "--output", type=Path, default=Path("subjects.tsv"))
    add_overwrite_option(s, file=True)
    s.set_defaults(func=_cmd_sheet_from_bids)

    s = sub.add_parser("synth", help="generate the embedded synthetic multi-center cohort")
    s.add_argument("outdir", type=Path)
    s.add_argument("--n-per-center", type=int, default=8)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size", choices=["demo", "paper"], default="demo")
    s.add_argument("--jobs", type=int, default=1)
    s.add_argument("--negative-share", type=float, default=0.0,
                   help="share of each center's patients without a thrombus (realistic: 0.2-0.3)")
    add_overwrite_option(s)
    s.set_defaults(func=_cmd_synth)

    s = sub.add_parser("ingest", help="ingest one subject of a sheet to canonical NIfTIs")
    s.add_argument("sheet", type=Path)
    s.add_argument("subject")
    s.add_argument("outdir", type=Path, help="the subject's output folder (new or empty)")
    add_overwrite_option(s)
    s.set_defaults(func=_cmd_ingest)

    for stage in STAGE_CLIS:
        stage.add_subparsers(sub)
    return p


def _user_errors() -> tuple[type[BaseException], ...]:
    """Every user-error type a command may raise (called once a command has failed)."""
    from .models.checkpoint import CheckpointError  # torch
    from .preprocessing import PreprocessingError  # ANTs

    return (*USER_ERRORS, InferenceError, CheckpointError, PreprocessingError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except _user_errors() as exc:
        print(f"thrombseg {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
