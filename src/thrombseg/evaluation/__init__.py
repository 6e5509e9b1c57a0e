"""Per-patient metrics and their aggregation into result tables."""

from thrombseg.evaluation.aggregate import aggregate_tables, summarize, write_tables
from thrombseg.evaluation.cli import load_pair
from thrombseg.evaluation.metrics import (
    dice,
    evaluate_case,
    hd95,
    lesion_f1,
    thrombus_metrics,
)

__all__ = [
    "aggregate_tables",
    "dice",
    "evaluate_case",
    "hd95",
    "lesion_f1",
    "load_pair",
    "summarize",
    "thrombus_metrics",
    "write_tables",
]
