"""What the benchmarks share, and the runner behind ``make bench``.

    .venv/bin/python benchmarks/_common.py [--quick] [--only train infer ...] [--out results/benchmarks]

Runs every benchmark of this folder (``NAMES``) in its own process and writes what it prints (its
table) to ``<out>/<name>.txt``, atomically, under a header with the command, the date, the wall time,
the machine (CPU model, cores, torch version and threads, ITK threads) and the git commit (``+dirty``
when tracked files differ from it). ``--quick`` is passed to each benchmark (smaller sizes, same
code). A benchmark that stops with exit code 2 and one line on stderr (``stop()``: something to run
first, e.g. selection.py without a trained demo model) is reported as skipped, with that line, and
does not fail the run; any other failure does (exit code 1 at the end, after the other benchmarks).

Each benchmark calls ``header()`` first, so a standalone run prints the same machine and commit lines.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
NAMES = ("synth", "model", "train", "dag", "preprocess", "infer", "selection", "hostile", "compare")
NEEDS = 2  # exit code of stop(): a prerequisite is missing


def stop(message: str) -> NoReturn:  # noqa: F821
    """One line on stderr naming what to run first, exit code ``NEEDS``; never a traceback."""
    print(f"{Path(sys.argv[0]).name}: {message}", file=sys.stderr, flush=True)
    raise SystemExit(NEEDS)


def commit() -> str:
    """HEAD's short hash, ``+dirty`` when a tracked file differs from it."""
    def git(*a):
        return subprocess.run(["git", "-C", str(ROOT), *a], capture_output=True, text=True, timeout=30)

    try:
        head = git("rev-parse", "--short=12", "HEAD")
        if head.returncode:
            return "unknown (not a git checkout)"
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown (git not available)"
    return head.stdout.strip() + ("+dirty" if dirty else "")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(itk_threads: str | int | None = None) -> str:
    """CPU model, cores, torch version and threads (this process), ITK threads, GPU if any."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    parts = [cpu_model(), f"{os.cpu_count()} cores ({usable} usable)"]
    if "torch" in sys.modules:  # the benchmark's own thread setting; never import torch just for this
        torch = sys.modules["torch"]
        parts.append(f"torch {torch.__version__}, torch threads {torch.get_num_threads()}")
        if torch.cuda.is_available():
            parts.append(f"GPU {torch.cuda.get_device_name(0)}")
    else:
        try:
            from importlib.metadata import version

            parts.append(f"torch {version('torch')} (not loaded by this benchmark)")
        except Exception:
            parts.append("torch not installed")
    if itk_threads is None:
        itk_threads = os.environ.get("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", f"unset (ITK default: {usable})")
    parts.append(f"ITK threads {itk_threads}")
    return ", ".join(parts)


def header(itk_threads: str | int | None = None) -> None:
    """The lines every table starts with: machine and commit (call after setting the threads)."""
    print(f"# machine: {machine(itk_threads)}")
    print(f"# commit: {commit()}", flush=True)


def write_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to a hidden temp file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def write_tsv(df, path: Path, float_format: str = "%.4f") -> Path:
    """A DataFrame as TSV, atomically."""
    return write_atomic(path, df.to_csv(sep="\t", index=False, float_format=float_format))


def shown(path) -> str:
    """A path relative to the repository when it lies inside it (for headers and messages)."""
    p = Path(path).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


# --------------------------------------------------------------------------------------------------
# the runner (make bench)
# --------------------------------------------------------------------------------------------------
def _pump(stream, sink, keep: list) -> None:
    for line in stream:
        sink.write(line)
        sink.flush()
        keep.append(line)


def run_one(name: str, quick: bool, out: Path) -> str:
    """Run benchmarks/<name>.py, write <out>/<name>.txt; returns 'ok', 'skipped' or 'failed'."""
    args = (["--quick"] if quick else []) + (["--out", shown(out / name)]  # their TSVs beside the table
                                             if name in ("preprocess", "infer", "selection", "hostile") else [])
    cmd = [sys.executable, shown(HERE / f"{name}.py"), *args]
    line = " ".join(cmd[1:])
    print(f"\n===== {line}", flush=True)
    t0 = time.perf_counter()
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = [], []
    pumps = [threading.Thread(target=_pump, args=(proc.stdout, sys.stdout, stdout)),
             threading.Thread(target=_pump, args=(proc.stderr, sys.stderr, stderr))]
    for p in pumps:
        p.start()
    for p in pumps:
        p.join()
    rc = proc.wait()
    wall = time.perf_counter() - t0
    lines = [ln for ln in "".join(stderr).splitlines() if ln.strip()]
    skipped = rc == NEEDS and len(lines) == 1 and "Traceback" not in lines[0]
    status = "ok" if rc == 0 else "skipped" if skipped else "failed"
    body = "".join(stdout)
    text = f"# {line}\n# date: {started}, wall time {wall:.0f} s, status {status}\n"
    if "# commit:" not in body:  # stopped before its header: say where it ran all the same
        text += f"# machine: {machine()}\n# commit: {commit()}\n"
    text += body
    if status != "ok":
        text += f"\n# {status}: " + (lines[0] if skipped else f"exit code {rc}; last stderr lines:\n"
                                     + "\n".join(lines[-20:])) + "\n"
    write_atomic(out / f"{name}.txt", text)
    print(f"----- {name}: {status} in {wall:.0f} s -> {shown(out / f'{name}.txt')}", flush=True)
    return status


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Run every benchmark; tables to results/benchmarks/<name>.txt")
    ap.add_argument("--quick", action="store_true", help="each benchmark's short form (a minute or two each)")
    ap.add_argument("--only", nargs="+", choices=NAMES, default=list(NAMES))
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks")
    a = ap.parse_args(argv)
    out = a.out.resolve()
    t0 = time.perf_counter()
    status = {n: run_one(n, a.quick, out) for n in a.only}
    print(f"\nbenchmarks ({'quick' if a.quick else 'full'} sizes, {time.perf_counter() - t0:.0f} s): "
          + ", ".join(f"{n} {s}" for n, s in status.items()))
    failed = [n for n, s in status.items() if s == "failed"]
    if failed:
        print(f"failed: {', '.join(failed)} (see {out}/<name>.txt)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
