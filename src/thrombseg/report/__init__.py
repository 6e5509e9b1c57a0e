"""Paper figures, tables and provenance of a thrombseg run.

* :mod:`.figures`: one function per figure (PNG + PDF, written atomically, colour-blind-safe).
* :mod:`.tables`: per-center and per-sequence-set tables as TSV, Markdown and LaTeX (booktabs).
* :mod:`.provenance`: resolved config, package versions, git commit, sample-sheet checksum, and
  BIDS-derivatives ``dataset_description.json`` files.

Importing this package is cheap; :mod:`.figures` and :mod:`.tables` load matplotlib and seaborn.
"""

__all__ = ["figures", "tables", "provenance"]
