"""Workflow policy, torch-free: what each experiment trains with and which of its steps run.

The Snakefile reads it when it parses; every decision here is a plain function, tested in
milliseconds without running a DAG.
"""

from __future__ import annotations

import copy

EXPERIMENT_ONLY = ("protocol", "protocol_center")  # experiment keys that are not training options

# Post-processing settings chosen on validation patients when ``inference.tune`` is absent; in mm^3
# so that one grid suits any voxel size (docs/decisions.md: the 20 mm^3 floor).
DEFAULT_TUNE_GRID = {"min_volume_mm3": [20.0, 40.0, 80.0]}


def deep_merge(base: dict, over: dict) -> dict:
    """``base`` updated by ``over``, nested dicts merged key by key (neither is modified)."""
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def experiment_settings(training: dict, experiment: str, target: str = "thrombus") -> tuple[dict, dict]:
    """(training options, experiment-only keys) of one experiment and target (thrombus | lesion)."""
    exps = training.get("experiments") or {}
    if experiment not in exps:
        raise ValueError(f"experiment {experiment!r} not in config training.experiments ({sorted(exps)})")
    exp = dict(exps[experiment] or {})
    extra = {k: exp.pop(k) for k in EXPERIMENT_ONLY if k in exp}
    cfg = deep_merge(training.get("defaults") or {}, exp)
    if target == "lesion":  # the infarct model shares the machinery, not the thrombus architecture
        cfg = deep_merge(deep_merge(training.get("defaults") or {}, training.get("infarct") or {}), {"target": "lesion"})
    else:
        cfg["target"] = "thrombus"
    return cfg, extra


def tune_grid(section: dict | None) -> dict:
    """The ``tune:`` grid of an ``inference:`` section: absent -> DEFAULT_TUNE_GRID, null or {} -> off."""
    section = section or {}
    return dict(section.get("tune", DEFAULT_TUNE_GRID) or {})
