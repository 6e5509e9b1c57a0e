"""`snakemake --profile slurm` on a REAL single-node Slurm (munged, slurmctld, slurmd on localhost).

Run with `make test-slurm` (or `pytest -m slurm`); `.ci/run` runs it after `make test`. Needs root
and apt-get on Debian/Ubuntu: tests/slurm/start_slurm.sh installs slurm-wlm + munge when missing and
exits 3 where it cannot (-> loud skip). The daemons are always stopped by their PIDs.

The cluster has no accounting database, so the committed profile (written for real sites, which
poll `sacct`) is used with the no-accounting overrides a user would add on such a cluster:
`--slurm-status-command squeue --slurm-no-account`.

Evidence that each job ran through Slurm comes from slurmctld's job-completion log (one line per
finished job: id, state, exit code), which does not expire. `squeue` forgets a finished job after
MinJobAge seconds (300 here), and the tiny DAG runs longer than that on 2 cores.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO
from test_dag import tiny_cohort

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(2400)]

SCRIPTS = REPO / "tests" / "slurm"
SKIP_RC = 3  # start_slurm.sh: Slurm cannot be provided here (no apt / not root)

# The no-accounting overrides (see slurm/config.yaml), plus test-only speed-ups: the first status
# poll after 5 s instead of 40 s, at most 2 CPUs per job (the node has 2), and keep the per-job
# Slurm logs (deleted on success by default) as evidence that the jobs ran through Slurm.
NO_ACCOUNTING = ["--slurm-status-command", "squeue", "--slurm-no-account"]
TEST_ONLY = ["--slurm-init-seconds-before-status-checks", "5", "--cores", "2",
             "--slurm-keep-successful-logs"]


def _report(request, line: str) -> None:
    """Print past pytest's output capture (durations belong in the CI log)."""
    pm = request.config.pluginmanager
    tr, capman = pm.get_plugin("terminalreporter"), pm.get_plugin("capturemanager")
    if tr is None or capman is None:
        print(f"[slurm] {line}", file=sys.stderr)
        return
    with capman.global_and_fixture_disabled():
        tr.ensure_newline()
        tr.write_line(f"[slurm] {line}")


@pytest.fixture(scope="module")
def slurm_env(tmp_path_factory, request):
    """Start the cluster, yield the environment its clients need, always stop it."""
    state = tmp_path_factory.mktemp("slurm")
    t0 = time.monotonic()
    start = subprocess.run(["bash", str(SCRIPTS / "start_slurm.sh"), str(state)],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
    try:
        if start.returncode == SKIP_RC:
            msg = start.stderr.strip() or "start_slurm.sh: Slurm not available"
            _report(request, msg)
            pytest.skip(f"REAL-SLURM TEST SKIPPED (no apt/root here): {msg}")
        assert start.returncode == 0, f"start_slurm.sh failed:\n{start.stdout}\n{start.stderr}"
        _report(request, f"single-node Slurm up in {time.monotonic() - t0:.1f} s (state: {state})")
        env = dict(os.environ)
        env["SLURM_CONF"] = str(state / "slurm.conf")  # conftest points it at /nonexistent
        env["PATH"] = f"{state / 'bin'}{os.pathsep}{env.get('PATH', '')}"  # srun shim, see script
        env["PYTHONUNBUFFERED"] = "1"
        env["THROMBSEG_SLURM_DIR"] = str(state)
        yield env
    finally:
        stop = subprocess.run(["bash", str(SCRIPTS / "stop_slurm.sh"), str(state)],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
        if stop.returncode != 0:
            print(stop.stdout, stop.stderr, file=sys.stderr)
        for pidfile in ("munged.pid", "slurmctld.pid", "slurmd.pid"):
            p = state / pidfile
            if p.is_file() and p.read_text().strip():
                pid = int(p.read_text().strip())
                assert not Path(f"/proc/{pid}").exists() or "zombie" in _proc_state(pid), \
                    f"{pidfile[:-4]} (PID {pid}) still running after stop_slurm.sh"


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return "zombie"


def _job_records(env: dict) -> dict[str, dict[str, str]]:
    """Job id -> fields of slurmctld's job-completion log (jobcomp/filetxt, see start_slurm.sh)."""
    log = Path(env["THROMBSEG_SLURM_DIR"]) / "log" / "jobcomp.log"
    records = {}
    for line in log.read_text().splitlines() if log.is_file() else []:
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if "JobId" in fields:
            records[fields["JobId"]] = fields
    return records


def _job_problems(jobids: list[str], env: dict, deadline_s: float = 30.0) -> list[str]:
    """What is wrong with these Slurm jobs: not recorded as finished, not COMPLETED, or exit != 0."""
    t_end = time.monotonic() + deadline_s
    while True:  # slurmctld appends the record as the job ends; allow it a moment
        records = _job_records(env)
        if all(j in records for j in jobids) or time.monotonic() > t_end:
            break
        time.sleep(1)
    problems = []
    for j in jobids:
        rec = records.get(j)
        if rec is None:
            problems.append(f"job {j}: no completion record (did not run through Slurm)")
        elif rec.get("JobState") != "COMPLETED" or rec.get("ExitCode") != "0:0":
            problems.append(f"job {j} ({rec.get('Name')}): {rec.get('JobState')}, exit {rec.get('ExitCode')}")
    return problems


def _submitted(out: str) -> list[tuple[str, str]]:
    """(Slurm job id, per-job log path) of every job the plugin submitted, from Snakemake's output."""
    return re.findall(r"submitted with SLURM jobid (\d+) \(log: ([^)]+)\)", out)


def _run_profile(snakefile: Path, workdir: Path, env: dict, *extra: str, timeout: int = 1500):
    cmd = [sys.executable, "-m", "snakemake", "--profile", str(REPO / "slurm"), *NO_ACCOUNTING,
           *TEST_ONLY, "-s", str(snakefile), "--directory", str(workdir), *extra]
    try:
        return subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:  # the plugin can poll forever: never hang CI
        pytest.fail(f"snakemake --profile slurm did not finish in {timeout} s:\n{exc.stdout}\n{exc.stderr}")


def test_failed_slurm_job_is_caught(tmp_path, slurm_env):
    """A job that fails inside Slurm fails the run, and its completion record says FAILED."""
    snakefile = tmp_path / "Snakefile"
    snakefile.write_text(
        'rule all:\n    input: "ok.txt", "bad.txt"\n\n'
        'rule ok:\n    output: "ok.txt"\n    shell: "echo ok > {output}"\n\n'
        'rule bad:\n    output: "bad.txt"\n    shell: "exit 3"\n'
    )
    res = _run_profile(snakefile, tmp_path, slurm_env, "--keep-going", timeout=600)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out[-4000:]
    submitted = _submitted(out)
    assert len(submitted) == 2, out[-4000:]
    problems = _job_problems([j for j, _ in submitted], slurm_env)
    assert len(problems) == 1 and ": FAILED, exit " in problems[0], (problems, out[-4000:])
    assert (tmp_path / "ok.txt").is_file() and not (tmp_path / "bad.txt").exists()
    # A job id Slurm never ran is caught too.
    assert _job_problems(["999999"], slurm_env, deadline_s=0) == [
        "job 999999: no completion record (did not run through Slurm)"]


def test_profile_runs_whole_tiny_dag_through_real_slurm(tmp_path, slurm_env, request):
    """Every stage, ingest to figures, on the 2-center x 3-patient tiny cohort of test_dag."""
    cfg = tiny_cohort(tmp_path / "data")
    workdir = tmp_path / "run"
    t0 = time.monotonic()
    res = _run_profile(REPO / "Snakefile", workdir, slurm_env,
                       "--configfile", str(REPO / "config" / "config.yaml"), str(cfg))
    took = time.monotonic() - t0
    out = res.stdout + res.stderr
    _report(request, f"snakemake --profile slurm (whole tiny DAG, 6 patients): {took:.1f} s, rc={res.returncode}")
    assert res.returncode == 0, out[-8000:]

    # The DAG's end products.
    results = workdir / "results"
    per_center = (results / "metrics" / "upattllstm_gmd" / "per_center.tsv").read_text()
    assert "ctrA" in per_center and "ctrC" in per_center
    assert (results / "figures" / "upattllstm_gmd" / "per_center_dice.png").is_file()
    assert (results / "models" / "upattllstm_gmd" / "thrombus" / "model.pt").is_file()

    # The jobs really went through Slurm: sbatch job ids in the log, their per-job Slurm logs, and
    # slurmctld's completion log records each as COMPLETED with exit 0, however long the run took.
    submitted = _submitted(out)
    assert submitted, out
    for _jobid, log in submitted:
        assert Path(log).is_file(), f"missing Slurm log {log}"
    assert _job_problems([j for j, _ in submitted], slurm_env) == []
    assert "Falling back to 'sacct'" not in out, out[-4000:]

    # Per-patient rules were grouped by the profile: the 6 patients' ingest + preprocess chain ran
    # as ONE Slurm job, their harmonization as one, the 2 test patients' inference as one.
    logs = [log for _, log in submitted]
    assert out.count("(Rule: ingest)") == 6 and out.count("(Rule: preprocess)") == 6, out[-5000:]
    assert sum("/group_subject" in n for n in logs) == 1, logs
    assert sum("/group_harmonize" in n for n in logs) == 1, logs
    assert sum("/group_predict" in n for n in logs) == 1, logs
    assert any("/rule_train_thrombus" in n for n in logs), logs
    # localrules (evaluation, figures, tables, provenance) ran in the main process, not as jobs.
    assert not any(f"/rule_{r}" in n for n in logs for r in ("figures", "evaluate", "tables")), logs
    _report(request, f"{len(submitted)} Slurm job(s) for the whole DAG: "
                     + ", ".join(f"{j}:{Path(n).relative_to(workdir / '.snakemake' / 'slurm_logs').parts[0]}"
                                 if (workdir / '.snakemake' / 'slurm_logs') in Path(n).parents else j
                                 for (j, _), n in zip(submitted, logs)))
