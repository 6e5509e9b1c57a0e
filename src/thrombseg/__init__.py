"""thrombseg: multi-center thrombus segmentation in stroke MRI.

Stages (one module or subpackage each, usable from Python, the ``thrombseg`` CLI and Snakemake):
``sheet`` (cohort contract), ``synth`` (embedded synthetic cohort), ``ingest``, ``preprocessing``,
``models``, ``training``, ``inference``, ``evaluation``.
"""

import os as _os

# OpenMP threads that spin while waiting make PyTorch on a CPU shared with other jobs (a laptop
# running the DAG, a shared cluster node) 10x slower (measured: inference 7 s -> 60-100 s per
# patient). Passive waiting costs little on an idle machine. Must be set before torch is imported,
# hence here; a user's explicit setting wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
