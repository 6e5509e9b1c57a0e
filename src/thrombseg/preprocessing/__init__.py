"""Preprocessing stage: skull stripping, ANTsPy co-registration, N4, site harmonisation, QC.

Library entry points (all also reachable as ``thrombseg preprocess ...``, see :mod:`.cli`):

* :func:`preprocess_subject` (ingest folder -> co-registered, stripped, N4-corrected NIfTIs + JSON + PNG)
* :func:`fit_landmarks` (training patients only -> Nyul landmarks JSON)
* :func:`harmonize_subject` (landmarks -> harmonised float32 ``.npy`` arrays)
* :func:`write_center_qc` (per-center QC TSV with outliers flagged)
* :func:`skull_strip`, :func:`register`, :func:`move_label`, :func:`n4_correct` building blocks.

Submodules are imported lazily so that ``import thrombseg.preprocessing`` stays cheap.
"""

from __future__ import annotations

_EXPORTS = {
    "PreprocessingError": "._io",
    "load_image": "._io",
    "skull_strip": ".skullstrip",
    "hdbet_weights_folder": ".skullstrip",
    "download_hdbet_weights": ".skullstrip",
    "HDBetWeightsMissing": ".skullstrip",
    "DEFAULT_BACKEND": ".skullstrip",
    "register": ".registration",
    "move_label": ".registration",
    "resample": ".registration",
    "Registration": ".registration",
    "n4_correct": ".bias",
    "fit_landmarks": ".harmonize",
    "harmonize_subject": ".harmonize",
    "detect_adc_units": ".units",
    "write_center_qc": ".qc",
    "qc_montage": ".qc",
    "preprocess_subject": ".pipeline",
    "resolve_config": ".settings",
    "DEFAULT_CONFIG": ".settings",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
