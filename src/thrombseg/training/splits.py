"""Train/val/test splits for the paper's protocols, deterministic from a seed.

Protocols:
    monocentric: train, val and test inside one named center (other centers excluded).
    multicentric: pooled centers; every center contributes held-out val and test patients.
    leave-center-out: one named center is the whole test set; the others are split train/val.

A split already written in the sample sheet wins over the protocol's assignment (except for the
held-out center of leave-center-out, which is test by definition).

With a ``thrombus_present`` column, each center's test and val places are shared between its
thrombus-negative and thrombus-positive patients in proportion (see :func:`_split_group`), and the
center's split sizes stay those without the column.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.io import write_table
from ..core.sequences import PRESENCE_COLUMN, thrombus_absent

PROTOCOLS = ("monocentric", "multicentric", "leave-center-out")


def _split_sizes(n: int, val_frac: float, test_frac: float) -> tuple[int, int]:
    """(test, val) sizes of a group of ``n``: at least one each once the group is large enough."""
    n_test = max(1, round(n * test_frac)) if n >= 3 and test_frac > 0 else 0
    n_val = max(1, round(n * val_frac)) if n - n_test >= 2 and val_frac > 0 else 0
    return n_test, n_val


def _deal(ids: list[str], order: np.ndarray, n_test: int, n_val: int) -> dict[str, str]:
    """The first ``n_test`` of ``ids`` in ``order`` to test, the next ``n_val`` to val, the rest to train."""
    return {ids[k]: "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
            for rank, k in enumerate(order)}


def _negative_share(places: int, n_neg: int, n: int) -> int:
    """The negatives' part of ``places`` shared over the strata by largest remainder (ties to them)."""
    whole, rest = divmod(places * n_neg, n)
    return whole + (rest > 0 and 2 * rest >= n)


def _split_group(ids: list[str], rng: np.random.Generator, val_frac: float, test_frac: float,
                 negatives: set[str] = frozenset()) -> dict[str, str]:
    """Split one center's patients; its thrombus-negative ``negatives`` as a stratum of their own.

    The center's test/val/train sizes do not depend on the negatives. Its test places and its val
    places are each shared between negatives and positives in proportion (largest remainder, ties to
    the negatives), but the positives keep a test and a val place while they last; a single held-out
    negative goes to test (specificity is measured there) rather than val.
    """
    ids = sorted(ids)
    n_test, n_val = _split_sizes(len(ids), val_frac, test_frac)
    neg = [s for s in ids if s in negatives]
    if not neg:  # the draws of a sheet without negatives, as before strata existed
        return _deal(ids, rng.permutation(len(ids)), n_test, n_val)
    pos = [s for s in ids if s not in negatives]
    keep_test = int(n_test > 0 and len(pos) > 0)  # the places the positives keep
    keep_val = int(n_val > 0 and len(pos) > keep_test)
    cap_test, cap_val = n_test - keep_test, n_val - keep_val
    neg_test = min(_negative_share(n_test, len(neg), len(ids)), cap_test, len(neg))
    neg_val = min(_negative_share(n_val, len(neg), len(ids)), cap_val, len(neg) - neg_test)
    if neg_test == 0 and neg_val > 0 and cap_test > 0:  # test before val
        neg_test, neg_val = 1, neg_val - 1
    excess = len(neg) - neg_test - neg_val - (len(ids) - n_test - n_val)  # negatives beyond the train places
    if excess > 0:  # too few positives to fill the held-out places: negatives take them
        more_test = min(excess, cap_test - neg_test)
        neg_test, neg_val = neg_test + more_test, neg_val + excess - more_test
    out = _deal(pos, rng.permutation(len(pos)), n_test - neg_test, n_val - neg_val)
    return out | _deal(neg, rng.permutation(len(neg)), neg_test, neg_val)


def assign_splits(
    sheet: pd.DataFrame,
    protocol: str = "multicentric",
    seed: int = 0,
    val_frac: float = 0.125,
    test_frac: float = 0.25,
    center: str | None = None,
) -> pd.DataFrame:
    """Return ``subject, center, split`` for every subject the protocol uses.

    Args:
        sheet: the sample sheet (needs ``subject``, ``center``; ``split`` and ``thrombus_present``
            optional; with the latter, each center's negatives are spread over the splits).
        protocol: one of :data:`PROTOCOLS`.
        seed: the same seed gives the same splits.
        center: the center of ``monocentric`` / the held-out center of ``leave-center-out``
            (default: the largest center, ties broken by name).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS}")
    sheet = sheet.reset_index(drop=True)  # a concatenated sheet may repeat index labels
    df = sheet[["subject", "center"]].copy()
    given = sheet["split"] if "split" in sheet.columns else pd.Series([""] * len(sheet), index=sheet.index)
    sizes = df.groupby("center").size()
    negatives = (set(sheet.loc[sheet[PRESENCE_COLUMN].map(thrombus_absent), "subject"])
                 if PRESENCE_COLUMN in sheet.columns else set())
    if center is None and protocol != "multicentric":
        center = sorted(sizes.index, key=lambda c: (-sizes[c], c))[0]
    if center is not None and center not in sizes.index:
        raise ValueError(f"protocol {protocol}: center {center!r} not in the cohort ({sorted(sizes.index)})")

    def rng(c: str) -> np.random.Generator:
        # one stream per center: adding a center (or patients to one) never reshuffles the others,
        # so their trained models and test sets stay valid
        return np.random.default_rng([seed, zlib.crc32(str(c).encode())])

    split: dict[str, str] = {}
    if protocol == "monocentric":
        df = df[df["center"] == center]
        split = _split_group(list(df["subject"]), rng(center), val_frac, test_frac, negatives)
    elif protocol == "multicentric":
        for c in sorted(sizes.index):
            split |= _split_group(list(df.loc[df["center"] == c, "subject"]), rng(c), val_frac, test_frac, negatives)
    else:
        held = df["center"] == center
        split = {s: "test" for s in df.loc[held, "subject"]}
        for c in sorted(set(sizes.index) - {center}):
            split |= _split_group(list(df.loc[df["center"] == c, "subject"]), rng(c),
                                  val_frac / (1 - test_frac), 0.0, negatives)
    # The sheet's split wins, except that a held-out center is test by definition.
    forced = set(df.loc[df["center"] == center, "subject"]) if protocol == "leave-center-out" else set()
    df["split"] = [split[s] if s in forced else (given.get(i) or split[s]) for i, s in zip(df.index, df["subject"])]
    return df.reset_index(drop=True)


def write_splits(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a splits table (tab-separated whatever the suffix) atomically."""
    return write_table(df, path, sep="\t")
