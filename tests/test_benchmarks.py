"""Every benchmark in benchmarks/ runs from a fresh clone in its --quick form through the runner of
`make bench` (benchmarks/_common.py), and its table lands in <out>/<name>.txt with the machine and
the git commit. selection.py and compare.py need a trained demo run and a second cohort: without them
they stop with one line naming the commands, which the runner reports as skipped.

The quick runs take about 6 minutes together on 2 cores, so they are marked slow (not in `make
test`); .ci/run runs them with `pytest -m slow tests/test_benchmarks.py`. The checks of the helpers
and of the one-line stops take seconds and run by default.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from conftest import REPO

BENCH = REPO / "benchmarks"
sys.path.insert(0, str(BENCH))
import _common  # noqa: E402

COMMIT = re.compile(r"^# commit: ([0-9a-f]{12}(\+dirty)?|unknown .*)$", re.M)
MACHINE = re.compile(r"^# machine: .+, \d+ cores \(\d+ usable\), torch \S+.*, ITK threads .+$", re.M)


def _run(*args, timeout=120):
    return subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=os.environ | {"SLURM_CONF": "/nonexistent"})


def _one_line_stop(res, *words):
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == _common.NEEDS, res.stderr
    assert len(lines) == 1 and "Traceback" not in res.stderr + res.stdout, res.stderr
    for w in words:
        assert w in lines[0]
    return lines[0]


def test_header_names_machine_and_commit(capsys):
    _common.header(itk_threads=3)
    out = capsys.readouterr().out
    assert MACHINE.search(out) and "ITK threads 3" in out and COMMIT.search(out), out


def test_write_atomic_leaves_no_temp_file(tmp_path):
    p = _common.write_atomic(tmp_path / "sub" / "t.txt", "one\n")
    _common.write_atomic(p, "two\n")
    assert p.read_text() == "two\n" and sorted(x.name for x in p.parent.iterdir()) == ["t.txt"]


def test_selection_without_demo_run_names_the_commands(tmp_path):
    line = _one_line_stop(_run(BENCH / "selection.py", "--quick", "--results", tmp_path / "none"),
                          "make demo", "benchmarks/unseen.yaml --until harmonize")
    assert line.startswith("selection.py: ")


def test_compare_patient_level_checks_the_targets_with_all_sequences():
    import compare
    import pandas as pd

    rows = []  # 4 positives (3 detected with all sequences) and 2 negatives (1 right), each also without swi
    for i, (truth, hit, pred, fp) in enumerate([(1, 1, 1, 0), (1, 1, 1, 0), (1, 1, 1, 1), (1, 0, 1, 1),
                                                (0, None, 0, 0), (0, None, 1, 1)]):
        for seqs, n in (("dwi+swi", 2), ("dwi", 1)):
            rows.append({"subject": f"p{i}", "center": "c", "experiment": "a", "sequence_set": seqs, "n_sequences": n,
                         "detected": (hit if n == 2 else 0) if truth else float("nan"), "n_fp_components": fp,
                         "truth_present": bool(truth), "pred_present": bool(pred), "presence_prob": 0.3 + 0.1 * i})
    level = compare.patient_level(pd.DataFrame(rows), ["a"], n_boot=200).set_index(["sequences", "metric"])
    assert level.loc[("all", "detection_rate"), "mean"] == 0.75 and level.loc[("pooled", "detection_rate"), "mean"] == 0.375
    assert level.loc[("all", "detection_rate"), "target"].startswith(">= 0.75: met")
    assert level.loc[("all", "n_fp_components"), "target"].startswith("<= 1: met")
    assert level.loc[("all", "patient_specificity"), "mean"] == 0.5
    assert level.loc[("all", "patient_specificity"), "target"] == ">= 0.8: missed"  # 2 negatives: interval 0-1
    assert level.loc[("all", "n_fp_components_per_negative"), "mean"] == 0.5
    assert level.loc[("pooled", "patient_specificity"), "target"] == ""  # targets are for all sequences


def test_compare_without_trained_models_or_unseen_cohort_names_the_commands(tmp_path):
    line = _one_line_stop(_run(BENCH / "compare.py", "--quick", "--results", tmp_path / "none"), "make demo")
    assert line.startswith("compare.py: ")


def test_infer_with_a_folder_that_is_no_demo_run_says_so(tmp_path):
    _one_line_stop(_run(BENCH / "infer.py", "--quick", "--results", tmp_path), "make demo")


def test_every_benchmark_has_quick_and_a_run_time():
    for name in _common.NAMES:
        doc = (BENCH / f"{name}.py").read_text()
        assert "--quick" in doc and "Run time on 2 CPU cores" in doc, name


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    """`make bench` (quick) into a temporary folder: the runner's exit code, output and table folder."""
    out = tmp_path_factory.mktemp("bench")
    res = _run(BENCH / "_common.py", "--quick", "--out", out, timeout=1500)
    return res, out


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("name", _common.NAMES)
def test_quick_benchmark_runs_and_writes_its_table(bench_run, name):
    res, out = bench_run
    assert "Traceback" not in res.stdout + res.stderr, res.stderr[-3000:]
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    text = (out / f"{name}.txt").read_text()
    assert MACHINE.search(text) and COMMIT.search(text), text[:1000]
    status = re.search(r"^# date: .*, status (\w+)$", text, re.M).group(1)
    if status == "skipped":  # only selection.py and compare.py may lack prerequisites (a demo run), with one line
        assert name in ("selection", "compare"), text
        assert re.search(rf"^# skipped: {name}\.py: .*make demo", text, re.M), text
    else:
        assert status == "ok", text
        assert "|" in text or "##" in text or "total" in text, text  # a table was printed
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporary files left behind"
