"""Which of a patient's sequences feed a model's channels, and the sequence subsets predicted."""

from __future__ import annotations

import itertools

from ..core.case import Case
from ..core.sequences import sources
from .settings import InferenceError

__all__ = ["case_sequences", "check_sequences", "known_sequences", "sequence_subsets", "subset_name"]


def known_sequences(modalities) -> dict[str, str]:
    """Sequence -> model channel it feeds (a channel's own sequence or its fallback, e.g. t2star -> swi)."""
    out: dict[str, str] = {}
    for channel in modalities:
        for sequence in sources(channel):
            out.setdefault(sequence, channel)
    return out


def check_sequences(given, thrombus_modalities, infarct_modalities=(), model_name="the thrombus model") -> None:
    """Raise :class:`InferenceError` for a sequence no model knows, or when none feeds the thrombus model."""
    thrombus_feeds = known_sequences(thrombus_modalities)
    known = {**known_sequences(infarct_modalities), **thrombus_feeds}
    unknown = sorted(set(given) - set(known))
    knows = ", ".join(f"{s} (as {m})" if s != m else s for s, m in thrombus_feeds.items())
    if unknown:
        infarct_only = sorted(set(known) - set(thrombus_feeds))
        raise InferenceError(f"{model_name} was not trained with {', '.join(unknown)}: it knows {knows}"
                             + (f"; the infarct model also uses {', '.join(infarct_only)}" if infarct_only else "")
                             + " (leave the other sequences out)")
    if not set(given) & set(thrombus_feeds):
        raise InferenceError(f"none of the given sequences ({', '.join(sorted(given))}) feeds {model_name}: "
                             f"it needs at least one of {knows}")


def case_sequences(case: Case, modalities) -> list[str]:
    """The case's sequences that feed one of the model's channels (directly or as fallback)."""
    return sorted(s for s in known_sequences(modalities) if s in case.images)


def sequence_subsets(available: list[str], subsets="all") -> list[tuple[str, ...]]:
    """Sequence subsets to predict with, largest first.

    ``subsets`` is ``"all"`` (every non-empty subset: the full missing-sequence table),
    ``"leave-one-out"`` (the full set and each set missing one sequence: cheap on a CPU),
    ``"full"`` (only the full set), or a list of sequence lists (those the case has).
    """
    full = tuple(sorted(available))
    if subsets == "all":
        return [c for r in range(len(full), 0, -1) for c in itertools.combinations(full, r)]
    if subsets == "leave-one-out":
        return [full] + ([tuple(s for s in full if s != d) for d in full] if len(full) > 1 else [])
    if subsets == "full":
        return [full]
    if isinstance(subsets, str):
        raise InferenceError(f"inference.subsets: unknown value {subsets!r} "
                             "(all | leave-one-out | full | a list of sequence lists)")
    return [tuple(sorted(s)) for s in subsets if s and set(s) <= set(available)]


def subset_name(subset) -> str:
    return "+".join(sorted(subset))
