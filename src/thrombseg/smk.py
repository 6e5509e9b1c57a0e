"""Glue for the workflow's thin scripts: log to the rule's log file, turn user errors into one line.

A rule script is ``run_step(snakemake, fn)``; ``fn(sm)`` does the work through the library. Known
input errors (bad sheet, unreadable file, missing weights) end the job with the message alone;
anything else keeps its traceback in the log, because it is a bug. This module imports no stage
that loads torch or ANTs: the Snakefile reads it when it parses, and every script starts with it.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback

from .config import ConfigError
from .core.errors import UserError
from .core.fs import OutputError
from .ingest import IngestError
from .sheet import SheetError

# Errors a user's input causes in any step; a step adds its own stage's (run_step's ``errors``).
USER_ERRORS: tuple[type[BaseException], ...] = (UserError, ConfigError, SheetError, IngestError, OutputError,
                                                FileNotFoundError)


def use_this_python() -> None:
    """Put the running interpreter's bin folder first on PATH (for the jobs Snakemake spawns)."""
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")


def run_step(sm, fn, errors: tuple[type[BaseException], ...] = ()) -> None:
    """Run ``fn(sm)`` with logging into ``sm.log[0]``; exit 1 with a clear message on user errors.

    ``errors``: the user-error types of the step's stage (e.g. ``PreprocessingError``), besides
    :data:`USER_ERRORS`.
    """
    log_path = sm.log[0] if len(sm.log) else None
    stream = open(log_path, "w") if log_path else sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        fn(sm)
    except (*USER_ERRORS, *errors) as exc:
        msg = f"{sm.rule}: error: {exc}"
        stream.write(msg + "\n")
        stream.flush()
        sys.stderr.write(msg + "\n")
        sys.exit(1)
    except Exception:
        stream.write(traceback.format_exc())
        stream.flush()
        raise
    finally:
        root.removeHandler(handler)
        if log_path:
            stream.close()
