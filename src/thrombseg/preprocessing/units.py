"""ADC units: detected from the brain's values and converted to the pipeline's 1e-3 mm^2/s."""

from __future__ import annotations

import numpy as np

from ._io import PreprocessingError

#: Canonical ADC unit of the pipeline.
ADC_UNIT = "1e-3 mm^2/s"


def detect_adc_units(values: np.ndarray, *, source: str = "ADC") -> tuple[float, str]:
    """(factor to reach 1e-3 mm^2/s, detected unit) from brain ADC values.

    Brain ADC (tissue + CSF) has a median of about 0.7-1.5 in 1e-3 mm^2/s. Scanners that store
    raw integers (0-4095) use 1e-6 mm^2/s (median about 700-1500) and some exports use mm^2/s
    (median about 0.001). Anything else is refused with a clear error instead of being guessed.
    """
    v = np.asarray(values, float)
    v = v[np.isfinite(v) & (v > 0)]
    if v.size < 100:
        raise PreprocessingError(f"{source}: too few positive ADC voxels in the brain ({v.size}) to detect units")
    med = float(np.median(v))
    if 0.15 <= med <= 6.0:
        return 1.0, ADC_UNIT
    if 150.0 <= med <= 6000.0:
        return 1e-3, "1e-6 mm^2/s (raw integer scale, 0-4095)"
    if 1.5e-4 <= med <= 6e-3:
        return 1e3, "mm^2/s"
    raise PreprocessingError(
        f"{source}: cannot tell the ADC unit (brain median {med:g}; expected about 1 in 1e-3 mm^2/s, "
        f"about 1000 in raw 1e-6 mm^2/s or about 0.001 in mm^2/s)")
