"""The output-folder policy shared by every command: whole or nothing, never a user's files."""
from __future__ import annotations

import json
import os

import pytest

from thrombseg.core.fs import MANIFEST, OutputError, atomic_dir, check_id, check_resumable_dir, write_manifest


def test_atomic_dir_replaces_on_success_and_leaves_old_output_on_failure(tmp_path):
    dest = tmp_path / "p1"
    with atomic_dir(dest) as tmp:
        (tmp / "a.txt").write_text("first")
    assert (dest / "a.txt").read_text() == "first"
    assert json.loads((dest / MANIFEST).read_text())["files"] == ["a.txt"]

    with pytest.raises(RuntimeError, match="boom"):
        with atomic_dir(dest, overwrite=True) as tmp:
            (tmp / "a.txt").write_text("half-written")
            raise RuntimeError("boom")
    assert (dest / "a.txt").read_text() == "first"  # the previous output is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p1"]  # no temp folder left

    with atomic_dir(dest, overwrite=True) as tmp:
        (tmp / "b.txt").write_text("second")
    assert sorted(p.name for p in dest.iterdir()) == [MANIFEST, "b.txt"]  # replaced whole, not merged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p1"]


def test_a_folder_of_empty_folders_counts_as_empty(tmp_path):
    """Snakemake creates the parents of a rule's outputs (e.g. results/synthetic/qc/) before the job."""
    dest = tmp_path / "synthetic"
    (dest / "qc").mkdir(parents=True)
    with atomic_dir(dest) as tmp:
        (tmp / "qc").mkdir()
        (tmp / "qc" / "montage.png").write_text("m")
    assert (dest / "qc" / "montage.png").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synthetic"]


def test_previous_output_needs_overwrite(tmp_path):
    dest = tmp_path / "p1"
    with atomic_dir(dest) as tmp:
        (tmp / "a.txt").write_text("first")
    with pytest.raises(OutputError, match="previous thrombseg output; give --overwrite"):
        with atomic_dir(dest):
            pass
    assert (dest / "a.txt").read_text() == "first"


@pytest.mark.parametrize("overwrite", [False, True])
def test_foreign_files_are_never_replaced(tmp_path, overwrite):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "annotation.txt").write_text("days of work")
    with pytest.raises(OutputError, match="not written by thrombseg"):
        with atomic_dir(notes, overwrite=overwrite):
            pass
    # a user's file added to an earlier output
    dest = tmp_path / "out"
    with atomic_dir(dest) as tmp:
        (tmp / "mask.nii.gz").write_text("m")
    (dest / "sub").mkdir()
    (dest / "sub" / "my_annotation.nii.gz").write_text("a")
    with pytest.raises(OutputError, match=r"did not write \(sub/my_annotation.nii.gz\)"):
        with atomic_dir(dest, overwrite=overwrite):
            pass
    assert (notes / "annotation.txt").is_file() and (dest / "sub" / "my_annotation.nii.gz").is_file()


def test_protected_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.txt").write_text("x")
    inputs = tmp_path / "data"
    inputs.mkdir()
    (inputs / "scan.nii.gz").write_text("s")
    for dest, why in [(".", "working directory"), (tmp_path.parent, "working directory"),
                      (inputs, "holds an input"), (os.path.expanduser("~"), "home folder|working directory")]:
        with pytest.raises(OutputError, match=why):
            with atomic_dir(dest, overwrite=True, inputs=[inputs / "scan.nii.gz"]):
                pass
    assert (tmp_path / "x.txt").is_file() and (inputs / "scan.nii.gz").is_file()


def test_unwritable_and_file_destinations(tmp_path):
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        with atomic_dir(tmp_path / "a_file" / "out"):
            pass
    with pytest.raises(OutputError, match="exists and is not a folder"):
        with atomic_dir(tmp_path / "a_file"):
            pass
    if os.geteuid() != 0:  # root writes anywhere; the check is os.access
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(OutputError, match="permission denied"):
            with atomic_dir(ro / "out"):
                pass


def test_unwritable_parent_is_one_line(tmp_path, monkeypatch):
    """Root ignores permission bits, so the refusal is simulated where os.access says no."""
    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    with pytest.raises(OutputError, match="permission denied"):
        with atomic_dir(tmp_path / "out"):
            pass


@pytest.mark.parametrize("bad", ["../../etc", "a/b", "..", ".hidden", "", "x..y", "a b"])
def test_ids_that_would_leave_the_folder_are_refused(bad):
    with pytest.raises(OutputError, match="not allowed in file names"):
        check_id(bad)
    assert check_id("ctrA01") == "ctrA01" and check_id("sub-01_x.2") == "sub-01_x.2"


def test_resumable_dir(tmp_path):
    assert check_resumable_dir(tmp_path / "new", "checkpoint_last.pt") == (tmp_path / "new").resolve()
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="holds no checkpoint_last.pt"):
        check_resumable_dir(run, "checkpoint_last.pt")
    (run / "checkpoint_last.pt").write_text("")
    assert check_resumable_dir(run, "checkpoint_last.pt") == run.resolve()


def test_output_file(tmp_path):
    from thrombseg.core.fs import check_output_file

    f = tmp_path / "out.tsv"
    assert check_output_file(f) == f.resolve()
    f.write_text("a user's hand-edited sheet")
    with pytest.raises(OutputError, match="exists; give --overwrite"):
        check_output_file(f)
    assert check_output_file(f, overwrite=True) == f.resolve()
    with pytest.raises(OutputError, match="also an input"):
        check_output_file(f, overwrite=True, inputs=[f])
    with pytest.raises(OutputError, match="is a folder"):
        check_output_file(tmp_path, overwrite=True)


def test_one_file_commands_never_replace_a_file_unasked(tmp_path, capsys):
    import pandas as pd

    from thrombseg.cli import main

    sheet = tmp_path / "sheet.tsv"
    pd.DataFrame({"subject": [f"s{i}" for i in range(6)], "center": ["c"] * 6}).to_csv(sheet, sep="\t", index=False)
    out = tmp_path / "splits.tsv"
    out.write_text("mine")
    assert main(["splits", str(sheet), str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err and out.read_text() == "mine"
    assert main(["splits", str(sheet), str(sheet), "--overwrite"]) == 2  # never over its own input
    assert "also an input" in capsys.readouterr().err
    assert main(["splits", str(sheet), str(out), "--overwrite"]) == 0 and "subject" in out.read_text()
    assert main(["sheet-from-bids", str(tmp_path), "-o", str(sheet)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_leftovers_of_a_killed_run_are_cleared_and_a_swapped_output_restored(tmp_path):
    """SIGKILL allows no clean-up: the next run of the same step removes what the dead one marked."""
    import socket
    import subprocess
    import sys

    from thrombseg.core.fs import PARTIAL

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    mark = json.dumps({"pid": int(dead), "host": socket.gethostname()})
    dest = tmp_path / "out"
    half = tmp_path / ".out.abc123"  # killed while writing
    half.mkdir()
    (half / PARTIAL).write_text(mark)
    swapped = tmp_path / ".out.old.def456"  # killed between moving the old output away and the rename
    (swapped / "previous").mkdir(parents=True)
    (swapped / "previous" / "a.txt").write_text("previous output")
    write_manifest(swapped / "previous", "test")
    (swapped / PARTIAL).write_text(mark)
    foreign = tmp_path / ".out.users"  # same prefix, not ours: never touched
    foreign.mkdir()
    live = tmp_path / ".out.live"  # a running process's folder: never touched
    live.mkdir()
    (live / PARTIAL).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    with pytest.raises(OutputError, match="previous thrombseg output"):  # restored, so --overwrite needed
        with atomic_dir(dest):
            pass
    assert (dest / "a.txt").read_text() == "previous output"
    assert not half.exists() and not swapped.exists() and foreign.is_dir() and live.is_dir()


def test_atomic_writes_get_the_usual_file_mode(tmp_path):
    """Files written through core.io are readable by the group/others the umask allows, like open()."""
    import os

    from thrombseg.core.io import write_text

    old = os.umask(0o022)
    try:
        write_text("x", tmp_path / "a.txt")
        (tmp_path / "b.txt").write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o644
