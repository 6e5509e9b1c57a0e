"""Provenance of a run: resolved config, package versions, git commit, sample-sheet checksum; and
BIDS-derivatives ``dataset_description.json`` files for the image-derivative folders.

``write_provenance(out_dir, config, sheet_path)`` writes

* ``<out_dir>/config.yaml``: the resolved configuration (after ``--config`` overrides);
* ``<out_dir>/provenance.json``: ``timestamp`` (UTC, ISO 8601), ``python``, ``platform``,
  ``packages`` (name -> version, ``"not installed"`` when absent), ``git`` (``commit``, ``dirty``:
  tracked files modified; ``"unknown"`` when the code is not a git checkout or git is missing),
  ``sheet`` (``path``, ``sha256``, ``bytes``), ``config_sha256`` (of the YAML written).
"""

from __future__ import annotations

import hashlib
import platform
import subprocess
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import yaml

from .. import __version__
from ..core.io import write_json, write_text

__all__ = [
    "PACKAGES",
    "BIDS_VERSION",
    "CODE_URL",
    "package_versions",
    "git_info",
    "sha256_file",
    "write_provenance",
    "write_dataset_description",
]

PACKAGES = ("thrombseg", "torch", "snakemake", "antspyx", "nibabel", "numpy", "pandas", "nilearn",
            "deepbet", "HD-BET")
BIDS_VERSION = "1.9.0"
CODE_URL = None  # set to the public repository URL once it has one
NOT_INSTALLED = "not installed"
UNKNOWN = "unknown"


def package_versions(packages: Iterable[str] = PACKAGES) -> dict[str, str]:
    """Installed version of each distribution (``importlib.metadata``), or ``"not installed"``."""
    out = {}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = NOT_INSTALLED
    return out


def _repo_root() -> Path:
    """The checkout that holds this package's source (editable install: ``src/thrombseg``)."""
    return Path(__file__).resolve().parents[3]


def git_info(repo: str | Path | None = None) -> dict[str, object]:
    """``{"commit": sha | "unknown", "dirty": bool | "unknown"}`` of the checkout ``repo``."""
    repo = Path(repo) if repo is not None else _repo_root()

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True,
                              timeout=30).stdout.strip()

    try:
        if git("rev-parse", "--is-inside-work-tree") != "true":
            raise ValueError
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError, ValueError):
        return {"commit": UNKNOWN, "dirty": UNKNOWN}
    return {"commit": commit, "dirty": dirty}


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _plain(obj):
    """Snakemake's Config / Namedlist and tuples -> plain YAML-safe containers."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_provenance(out_dir: str | Path, config: Mapping, sheet_path: str | Path | None, *,
                     repo: str | Path | None = None, packages: Iterable[str] = PACKAGES) -> dict[str, Path]:
    """Write ``config.yaml`` and ``provenance.json`` into ``out_dir``; return their paths.

    Args:
        config: the resolved workflow config (Snakemake's ``config``).
        sheet_path: the sample sheet the run used (its SHA-256 is recorded); None or a missing file
            records ``"unknown"``.
        repo: the code checkout whose commit is recorded (default: this package's checkout).
    """
    out_dir = Path(out_dir)
    cfg_text = yaml.safe_dump(_plain(config), sort_keys=False, default_flow_style=False, allow_unicode=True)
    sheet = {"path": None if sheet_path is None else str(sheet_path), "sha256": UNKNOWN, "bytes": None}
    if sheet_path is not None and Path(sheet_path).is_file():
        sheet.update(sha256=sha256_file(sheet_path), bytes=Path(sheet_path).stat().st_size)
    record = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "packages": package_versions(packages),
        "git": git_info(repo),
        "sheet": sheet,
        "config_sha256": hashlib.sha256(cfg_text.encode()).hexdigest(),
    }
    paths = {"config": out_dir / "config.yaml", "provenance": out_dir / "provenance.json"}
    write_text(cfg_text, paths["config"])
    write_json(record, paths["provenance"])
    return paths


def write_dataset_description(deriv_root: str | Path, name: str, *, version: str | None = None,
                              code_url: str | None = CODE_URL, description: str | None = None,
                              source_datasets: list[dict] | None = None) -> Path:
    """Write a BIDS-derivatives ``<deriv_root>/dataset_description.json`` (BIDS 1.9.0).

    ``GeneratedBy`` names thrombseg with its version (``version`` or the installed one) and, when
    given, ``CodeURL`` and ``Description``.
    """
    if version is None:
        version = package_versions(["thrombseg"])["thrombseg"]
        if version == NOT_INSTALLED:
            version = __version__
    gen: dict[str, str] = {"Name": "thrombseg", "Version": str(version)}
    if code_url:
        gen["CodeURL"] = code_url
    if description:
        gen["Description"] = description
    desc: dict[str, object] = {
        "Name": name,
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [gen],
    }
    if source_datasets:
        desc["SourceDatasets"] = source_datasets
    path = Path(deriv_root) / "dataset_description.json"
    write_json(desc, path)
    return path
