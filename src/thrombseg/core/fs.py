"""Output folders: written whole or not at all, and never at the cost of a user's files.

Every folder a thrombseg command writes carries a manifest (``.thrombseg-output.json``) listing the
files it made. A command writes into a new or empty folder; it replaces a previous thrombseg output
only when asked (``overwrite=True``) and only when that folder holds nothing but the files its
manifest lists; it never replaces ``/``, the user's home, the working directory or a folder that
holds one of its inputs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .. import __version__

MANIFEST = ".thrombseg-output.json"
PARTIAL = ".thrombseg-partial"  # marks a temporary folder as unfinished work of one process
OVERWRITE_HELP = "replace a previous thrombseg output there (never a folder holding other files)"
# Ids become file and folder names: no separators, no leading dot, no "..".
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class OutputError(ValueError):
    """An output path thrombseg refuses to write; the message names it."""


def check_id(value, what: str = "subject") -> str:
    """``value`` if it is safe as a file-name part, else OutputError (path traversal, empty, ...)."""
    text = str(value)
    if not ID_PATTERN.match(text) or ".." in text:
        raise OutputError(f"{what} id {text!r} is not allowed in file names "
                          "(letters, digits, '.', '_', '-'; no path separators or '..')")
    return text


def _refuse_protected(dest: Path, inputs: Iterable) -> None:
    """OutputError when ``dest`` may never be replaced (root, home, working directory, an input's folder)."""
    why = _protected(dest, inputs)
    if why:
        raise OutputError(f"{dest}: refusing to write there: it {why}")


def _protected(dest: Path, inputs: Iterable) -> str | None:
    """Why ``dest`` may never be replaced, or None."""
    if dest == Path(dest.anchor):
        return "is the file-system root"
    if dest == Path.home().resolve():
        return "is your home folder"
    cwd = Path.cwd().resolve()
    if dest == cwd or dest in cwd.parents:
        return "is the working directory or one of its parents"
    for item in inputs:
        if item is None or str(item) == "":
            continue
        p = Path(item).expanduser().resolve()
        if dest == p or dest in p.parents:
            return f"holds an input ({p})"
    return None


def _manifest_files(folder: Path) -> set[str] | None:
    """Files a previous thrombseg output lists in its manifest; None when it has no readable one."""
    try:
        data = json.loads((folder / MANIFEST).read_text())
        return {str(f) for f in data["files"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _holds_files(folder: Path) -> bool:
    return any(not p.is_dir() for p in folder.rglob("*"))


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir()} - {MANIFEST}


def check_output_dir(dest, overwrite: bool = False, inputs: Iterable = ()) -> Path:
    """Resolve ``dest`` and refuse, with one line, to write there if that could lose a user's file.

    Allowed: a path that does not exist, an empty folder, or (with ``overwrite``) a previous thrombseg
    output holding only the files its manifest lists.
    """
    dest = Path(dest).expanduser().resolve()
    _refuse_protected(dest, inputs)
    if not dest.exists():
        _check_writable(dest)
        return dest
    if not dest.is_dir():
        raise OutputError(f"{dest}: exists and is not a folder")
    if not _holds_files(dest):  # empty, or only empty folders (Snakemake makes outputs' parents first)
        _check_writable(dest)
        return dest
    made = _manifest_files(dest)
    if made is None:
        raise OutputError(f"{dest}: exists, is not empty and was not written by thrombseg; "
                          "give a new or empty folder")
    foreign = sorted(_files(dest) - made)
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise OutputError(f"{dest}: holds files thrombseg did not write ({', '.join(foreign[:3])}{more}); "
                          "move them away or give another folder")
    if not overwrite:
        raise OutputError(f"{dest}: holds a previous thrombseg output; give --overwrite to replace it")
    _check_writable(dest)
    return dest


def check_output_file(path, overwrite: bool = False, inputs: Iterable = ()) -> Path:
    """A single output file: refuse an existing one unless ``overwrite``, and never an input or a folder."""
    path = Path(path).expanduser().resolve()
    if path.is_dir():
        raise OutputError(f"{path}: is a folder, not a file to write")
    for item in inputs:
        if item is not None and str(item) != "" and Path(item).expanduser().resolve() == path:
            raise OutputError(f"{path}: is also an input of this command; give another output path")
    if path.exists() and not overwrite:
        raise OutputError(f"{path}: exists; give --overwrite to replace it")
    _check_writable(path.parent)
    return path


def add_overwrite_option(parser, file: bool = False) -> None:
    """The ``--overwrite`` flag of every command that writes (argparse); ``file``: a one-file output."""
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the output file if it exists (never an input)" if file else OVERWRITE_HELP)


def check_resumable_dir(dest, marker: str) -> Path:
    """A folder a resumable step writes in place: new, empty, or holding that step's ``marker`` file."""
    dest = Path(dest).expanduser().resolve()
    _refuse_protected(dest, ())
    if dest.exists() and (not dest.is_dir() or (_holds_files(dest) and not (dest / marker).is_file())):
        raise OutputError(f"{dest}: exists and is not empty, and holds no {marker} of an earlier run; "
                          "give a new or empty folder")
    _check_writable(dest)
    return dest


def _check_writable(dest: Path) -> None:
    parent = next((p for p in (dest, *dest.parents) if p.exists()), None)
    if parent is None or not parent.is_dir():
        raise OutputError(f"{dest}: cannot be created ({parent} is not a folder)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{dest}: cannot write in {parent} (permission denied)")


def write_manifest(folder: Path, command: str) -> None:
    """List every file under ``folder`` as made by ``command`` (the mark of a thrombseg output)."""
    entry = {"tool": "thrombseg", "version": __version__, "command": command,
             "files": sorted(_files(folder))}
    (folder / MANIFEST).write_text(json.dumps(entry, indent=1) + "\n")


def _partial_dir(dest: Path, kind: str) -> Path:
    """A hidden folder beside ``dest`` marked as this process's unfinished work."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.{kind}", dir=dest.parent))
    (tmp / PARTIAL).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    return tmp


def _clear_stale(dest: Path) -> None:
    """Remove what a killed earlier run of this step left beside ``dest`` (only folders it marked).

    A run killed while swapping leaves the previous output in ``.<name>.old.*/previous``: it is put
    back when ``dest`` is missing. Folders of a live process, or of another host, are left alone.
    """
    for sib in dest.parent.glob(f".{dest.name}.*"):
        try:
            owner = json.loads((sib / PARTIAL).read_text())
        except (OSError, ValueError):
            continue
        if owner.get("host") != socket.gethostname() or _alive(int(owner.get("pid", 0))):
            continue
        if sib.name.startswith(f".{dest.name}.old.") and (sib / "previous").is_dir() and not dest.exists():
            (sib / "previous").rename(dest)
        shutil.rmtree(sib, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0
    return pid > 0


@contextmanager
def atomic_dir(dest, overwrite: bool = False, inputs: Iterable = (), command: str = "thrombseg") -> Iterator[Path]:
    """Yield a hidden temporary folder beside ``dest``; on success it becomes ``dest``.

    ``dest`` is checked first (:func:`check_output_dir`); on success the temporary folder gets a
    manifest and replaces ``dest`` (a previous thrombseg output, checked again just before). On any
    exception (including KeyboardInterrupt) the temporary folder is removed and ``dest`` is left as
    it was, so a failed or killed step never leaves a half-written output.
    """
    inputs = list(inputs)
    dest = Path(dest).expanduser().resolve()
    if dest.parent.is_dir():
        _clear_stale(dest)
    dest = check_output_dir(dest, overwrite, inputs)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = _partial_dir(dest, "")
    except OSError as exc:
        raise OutputError(f"{dest}: cannot be created ({exc.strerror or exc})") from None
    old = None
    try:
        yield tmp
        (tmp / PARTIAL).unlink()
        write_manifest(tmp, command)
        if dest.exists():
            check_output_dir(dest, overwrite=True, inputs=inputs)  # nothing foreign crept in meanwhile
            if any(dest.iterdir()):
                old = _partial_dir(dest, "old.")
                dest.rename(old / "previous")
            else:
                dest.rmdir()
        try:
            tmp.rename(dest)
        except BaseException:
            if old is not None:  # put the previous output back rather than lose both
                (old / "previous").rename(dest)
                old = None
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
