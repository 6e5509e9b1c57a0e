"""thrombseg: multi-center thrombus segmentation in stroke MRI.

Stages (one module or subpackage each, usable from Python, the ``thrombseg`` CLI and Snakemake):
``sheet`` (cohort contract), ``synth`` (embedded synthetic cohort), ``ingest``, ``preprocessing``,
``models``, ``training``, ``inference``, ``evaluation``.
"""

__version__ = "0.1.0"
