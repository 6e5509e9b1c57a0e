"""The atomic output folder shared by ingest, preprocessing and thrombseg predict."""
from __future__ import annotations

import pytest

from thrombseg._fs import atomic_dir


def test_atomic_dir_replaces_on_success_and_leaves_old_output_on_failure(tmp_path):
    dest = tmp_path / "p1"
    with atomic_dir(dest) as tmp:
        (tmp / "a.txt").write_text("first")
    assert (dest / "a.txt").read_text() == "first"

    with pytest.raises(RuntimeError, match="boom"):
        with atomic_dir(dest) as tmp:
            (tmp / "a.txt").write_text("half-written")
            raise RuntimeError("boom")
    assert (dest / "a.txt").read_text() == "first"  # the previous output is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p1"]  # no temp folder left

    with atomic_dir(dest) as tmp:
        (tmp / "b.txt").write_text("second")
    assert sorted(p.name for p in dest.iterdir()) == ["b.txt"]  # replaced whole, not merged
