"""thrombseg: multi-center thrombus segmentation in stroke MRI.

Stages (one module or subpackage each, usable from Python, the ``thrombseg`` CLI and Snakemake)
stand on the torch-free base layer ``core``: ``sheet`` and ``config`` (contracts), ``plan`` (workflow
policy), ``synth``, ``ingest``, ``preprocessing``, ``models``, ``evaluation``, ``inference``,
``training``, ``report``; ``cli`` and ``smk`` are the entry points.
"""

import os as _os

# Spinning OpenMP threads make torch many times slower on a CPU shared with other jobs; set before
# torch is imported, hence here (a user's explicit setting wins).
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
