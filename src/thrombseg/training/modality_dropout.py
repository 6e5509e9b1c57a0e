"""Gradual modality dropout (GMD) and its attenuation schedules.

With probability ``p`` a sequence is multiplied by ``(1 - a) + eps`` (``eps`` ~ N(0, sigma), one
scalar per (sample, sequence), optionally plus voxel-wise noise); the attenuation ``a`` rises over
training (default staircase 0.25 / 0.5 / 0.75 / 1.0 from 0 / 25 / 50 / 75 % of the epochs). At
``a = 1`` a dropped sequence is also marked unavailable. At least one available sequence per
sample is always kept. ``grouping`` says what one draw decides: ``"per_sequence"`` (default) each
eligible (sample, sequence) independently; ``"per_sample"`` one draw per sample that drops all
its eligible sequences together (the public reference implementation's way). Before the first
stage boundary, and with schedule ``"none"``, nothing is drawn and the batch passes unchanged.

Deviations from the public reference implementation (README, "Deviations from the papers"):

* grouping ``per_sequence`` by default (the reference: ``per_sample``);
* ``sigma`` 0.05 by default (the reference: 0.1);
* the attenuation is never reassigned while drawing: every drop of a batch uses the same ``a``.
  The reference alternates ``a`` and ``1 - a`` (it reassigns the attenuation inside its loop);
  that is a bug, not copied, not even by ``preset: reference`` (:data:`PRESETS`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

SCHEDULES = ("staircase", "linear", "cosine", "fixed", "none")
GROUPINGS = ("per_sequence", "per_sample")
#: Named settings of the dropout config (training.config.DropoutConfig); keys a config sets
#: itself win. ``reference``: the authors' public implementation as recorded in this module's
#: docstring (one draw per sample, sigma 0.1, the 0.25 / 0.5 / 0.75 / 1.0 staircase from 0 / 25 /
#: 50 / 75 % of the epochs) without its a / 1 - a alternation.
PRESETS: dict[str, dict] = {
    "reference": {"schedule": "staircase", "grouping": "per_sample", "sigma": 0.1,
                  "stages": (0.25, 0.5, 0.75, 1.0), "boundaries": (0.0, 0.25, 0.5, 0.75)},
}


def check_schedule(stages: Sequence[float], boundaries: Sequence[float]) -> tuple[list, list]:
    """``(stages, boundaries)`` as float lists; ValueError (one line) unless they form a schedule.

    Valid: equally long and non-empty, stages in [0, 1], boundaries non-decreasing in [0, 1].
    """
    stages, boundaries = [float(s) for s in stages], [float(b) for b in boundaries]
    if not stages or len(stages) != len(boundaries):
        raise ValueError(f"stages and boundaries must be non-empty and of equal length, got "
                         f"{len(stages)} stages and {len(boundaries)} boundaries")
    if any(b1 < b0 for b0, b1 in zip(boundaries, boundaries[1:])):
        raise ValueError(f"boundaries must be non-decreasing, got {boundaries}")
    if any(not 0.0 <= b <= 1.0 for b in boundaries):
        raise ValueError(f"boundaries must lie in [0, 1], got {boundaries}")
    if any(not 0.0 <= s <= 1.0 for s in stages):
        raise ValueError(f"stages must lie in [0, 1], got {stages}")
    return stages, boundaries


def stage_index(epoch: int, n_epochs: int, boundaries: Sequence[float]) -> int:
    """Index of the last stage started at a 0-based ``epoch``; -1 before the first boundary.

    Stage ``i`` starts at the first epoch at or past ``boundaries[i] * n_epochs``.
    """
    current = -1
    for i, b in enumerate(boundaries):
        # Integer comparison where possible so e.g. epoch 25 of 100 is exactly at 0.25.
        if epoch >= float(b) * n_epochs - 1e-9:
            current = i
    return current


def attenuation_at(epoch: int, n_epochs: int, kind: str = "staircase",
                   stages: Sequence[float] = (0.25, 0.5, 0.75, 1.0),
                   boundaries: Sequence[float] = (0.0, 0.25, 0.5, 0.75)) -> float:
    """Attenuation ``a`` for a 0-based ``epoch`` out of ``n_epochs``.

    Args:
        epoch: Current epoch, 0-based; values past the end are clamped to the last.
        n_epochs: Total number of epochs (> 0).
        kind: ``"staircase"``: ``stages[i]`` from ``boundaries[i] * n_epochs`` on.
            ``"linear"`` / ``"cosine"``: a ramp (straight / half-cosine) from ``stages[0]`` at
            ``boundaries[0]`` to ``stages[-1]`` at ``boundaries[-1]``, flat after, so full
            attenuation starts when the staircase's last stage does.
            Before ``boundaries[0]`` these three give 0 (and :class:`GradualModalityDropout`
            draws nothing there: no dropout at all, see :meth:`GradualModalityDropout.active`).
            ``"fixed"``: always ``stages[-1]`` (plain modality dropout with the defaults).
            ``"none"``: always 0 (and no dropout at all).
        stages: Attenuation values, in [0, 1].
        boundaries: Start of each stage as a fraction of training, non-decreasing in [0, 1].

    Returns:
        The attenuation in [0, 1].
    """
    if n_epochs <= 0:
        raise ValueError(f"n_epochs must be positive, got {n_epochs}")
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    if kind not in SCHEDULES:
        raise ValueError(f"unknown schedule {kind!r}; choose from {SCHEDULES}")
    stages, boundaries = check_schedule(stages, boundaries)
    if kind == "none":
        return 0.0
    if kind == "fixed":
        return stages[-1]
    stage = stage_index(epoch, n_epochs, boundaries)
    if stage < 0:
        return 0.0
    if kind == "staircase":
        return stages[stage]
    frac = min(epoch, n_epochs - 1) / n_epochs
    b0, b1 = boundaries[0], boundaries[-1]
    t = 1.0 if b1 <= b0 else min(max((frac - b0) / (b1 - b0), 0.0), 1.0)
    if kind == "cosine":
        t = 0.5 - 0.5 * math.cos(math.pi * t)
    return stages[0] + (stages[-1] - stages[0]) * t


class GradualModalityDropout:
    """Gradual modality dropout, applied to a batch (B, M, S, H, W).

    Args:
        p: Probability of a drop: of each eligible, available sequence of each sample
            (``per_sequence``), or of each sample, all its eligible sequences at once
            (``per_sample``).
        eligible: Indices of sequences that may be dropped (default all).
        sigma: Std of the scalar noise ``eps`` added to the multiplier per (sample, sequence).
        voxel_sigma: Std of optional voxel-wise noise added to the multiplier (0: off).
        schedule: Schedule kind (see :func:`attenuation_at`): with ``stages`` and ``boundaries``
            it says when the dropout is :meth:`active`; ``"none"`` makes every call the identity.
        stages, boundaries: Schedule parameters.
        grouping: ``"per_sequence"`` or ``"per_sample"`` (module docstring).

    Example:
        >>> gmd = GradualModalityDropout(p=0.5, sigma=0.05)
        >>> a = attenuation_at(epoch, n_epochs) if gmd.active(epoch, n_epochs) else None
        >>> x, available = gmd(x, available, a, generator=g)
    """

    def __init__(self, p: float = 0.5, eligible: Sequence[int] | None = None,
                 sigma: float = 0.0, voxel_sigma: float = 0.0, schedule: str = "staircase",
                 stages: Sequence[float] = (0.25, 0.5, 0.75, 1.0),
                 boundaries: Sequence[float] = (0.0, 0.25, 0.5, 0.75),
                 grouping: str = "per_sequence") -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must lie in [0, 1], got {p}")
        if sigma < 0 or voxel_sigma < 0:
            raise ValueError("sigma and voxel_sigma must be >= 0")
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; choose from {SCHEDULES}")
        if grouping not in GROUPINGS:
            raise ValueError(f"unknown grouping {grouping!r}; choose from {GROUPINGS}")
        check_schedule(stages, boundaries)
        self.p, self.sigma, self.voxel_sigma = float(p), float(sigma), float(voxel_sigma)
        self.eligible = None if eligible is None else tuple(int(i) for i in eligible)
        self.schedule, self.stages, self.boundaries = schedule, tuple(stages), tuple(boundaries)
        self.grouping = grouping

    def active(self, epoch: int, n_epochs: int) -> bool:
        """Whether sequences are dropped at all at ``epoch``: not with schedule ``"none"``, nor
        before the first stage boundary (``"fixed"`` ignores the boundaries: always active)."""
        if self.schedule == "none":
            return False
        return self.schedule == "fixed" or stage_index(epoch, n_epochs, self.boundaries) >= 0

    def __call__(self, x: Tensor, available: Tensor, attenuation: float | None,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Drop sequences of a batch.

        Args:
            x: Images (B, M, S, H, W) (any trailing dims).
            available: Bool (B, M); already-absent sequences are left alone.
            attenuation: ``a`` in [0, 1]; ``None``: no dropout (see below).
            generator: Source of all randomness (deterministic given its seed).

        Returns:
            ``(x_out, available_out)``; new tensors, the inputs are not modified. With schedule
            ``"none"`` or ``attenuation=None`` the identity: ``(x, available)`` themselves, and
            nothing is drawn from ``generator``.
        """
        if self.schedule == "none" or attenuation is None:
            return x, available
        if not 0.0 <= attenuation <= 1.0:
            raise ValueError(f"attenuation must lie in [0, 1], got {attenuation}")
        b, m = x.shape[:2]
        if available.shape != (b, m):
            raise ValueError(f"available must be {(b, m)}, got {tuple(available.shape)}")
        available = available.to(device=x.device, dtype=torch.bool)
        gen_device = generator.device if generator is not None else x.device

        def draw(fn, *shape):  # draw on the generator's device, then move
            return fn(*shape, generator=generator, device=gen_device).to(x.device)

        eligible = torch.zeros(m, dtype=torch.bool, device=x.device)
        eligible[list(range(m)) if self.eligible is None else list(self.eligible)] = True
        # All draws are vectorised over (sample, sequence) and happen in a fixed order, so the
        # result is a pure function of the generator state and one `a` serves every drop.
        if self.grouping == "per_sample":  # one draw per sample: its eligible sequences go together
            u = draw(torch.rand, b)[:, None].expand(b, m)
        else:
            u = draw(torch.rand, b, m)
        eps = draw(torch.randn, b, m) * self.sigma
        tie = draw(torch.rand, b, m)
        drop = (u < self.p) & eligible & available
        # Never drop every available sequence: keep one of the drawn ones, chosen uniformly.
        all_gone = (available & ~drop).sum(1) == 0
        if all_gone.any():
            keep = torch.where(drop, tie, torch.full_like(tie, -1.0)).argmax(dim=1)
            rescue = torch.zeros_like(drop).scatter_(1, keep[:, None], True) & all_gone[:, None]
            drop &= ~rescue
        factor = torch.where(drop, (1.0 - attenuation) + eps, torch.ones_like(eps))
        factor = factor.to(x.dtype).view(b, m, *([1] * (x.dim() - 2)))
        if self.voxel_sigma > 0:
            noise = draw(torch.randn, *x.shape).to(x.dtype) * self.voxel_sigma
            dropv = drop.view(b, m, *([1] * (x.dim() - 2)))
            factor = torch.where(dropv, factor + noise, factor)
        x_out = x * factor
        available_out = available & ~drop if attenuation >= 1.0 else available.clone()
        return x_out, available_out

    def __repr__(self) -> str:
        return (f"GradualModalityDropout(p={self.p}, eligible={self.eligible}, sigma={self.sigma},"
                f" voxel_sigma={self.voxel_sigma}, schedule={self.schedule!r},"
                f" grouping={self.grouping!r})")
