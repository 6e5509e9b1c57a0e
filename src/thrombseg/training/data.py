"""The 2.5-D stack dataset drawn from harmonized cases.

A *case* (:class:`thrombseg.core.case.Case`) is one patient's harmonized arrays (memory-mapped
``.npy``, axes x, y, z on the reference grid). A *stack* is ``s`` neighbouring axial slices, laid
out (M, S, H, W) for the network. Each patient yields a stack that contains the target and a
target-free stack of neighbouring slices (the MIDL 2024 recipe against extreme class imbalance).
With hard negatives (:meth:`StackDataset.set_hard_negatives`), a share of a patient's negative
stacks is centred on one of the model's own false positives in that patient instead; such a stack
keeps its true labels, so one next to the target may show part of it.

Every random draw of an item comes from a generator seeded by (seed, epoch, index), so an epoch is
reproducible whatever the worker count or order, which is what makes resume bit-exact.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import Dataset

from ..core.case import Case
from .config import AugmentConfig


class StackDataset(Dataset):
    """Positive/negative stack pairs of ``stack`` slices cropped to ``crop`` in plane.

    Args:
        cases: harmonized cases.
        modalities: model channels, e.g. ``["swi", "phase", "dwi", "adc", "flair"]``.
        target: ``"thrombus"`` or ``"infarct"``.
        stack: slices per stack (s).
        crop: in-plane size (H, W); smaller volumes are zero-padded.
        fg_oversample: probability that the "negative" slot draws another positive stack instead.
        augment: augmentation config, or None for none.
        seed: base seed.
        negatives: in-plane position of the target-free stack: ``"brain"`` anywhere in the brain
            (what a whole-slice 256x256 crop sees), ``"near"`` around the target.
        hard_share: share of the negative stacks of a patient with hard-negative centres
            (:meth:`set_hard_negatives`) that are centred on one of them; 0: none.
    """

    def __init__(self, cases, modalities, target="thrombus", stack=12, crop=(128, 128),
                 fg_oversample=0.0, augment: AugmentConfig | None = None, seed=0, negatives="brain",
                 hard_share=0.0):
        if negatives not in ("brain", "near"):
            raise ValueError(f"negatives must be 'brain' or 'near', got {negatives!r}")
        if not 0.0 <= float(hard_share) <= 1.0:
            raise ValueError(f"hard_share must lie in [0, 1], got {hard_share}")
        self.negatives = negatives
        self.hard_share = float(hard_share)
        self.hard_centres: dict[str, np.ndarray] = {}
        self.cases = list(cases)
        self.modalities = list(modalities)
        self.target = target
        self.stack = int(stack)
        self.crop = tuple(int(c) for c in crop)
        self.fg_oversample = fg_oversample
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.site_strength = 0.0
        # per distinct case: the trainer repeats each case ``repeats`` times in ``cases``
        extents = {id(c): (self._foreground(c), self._brain_extent(c)) for c in self.cases}
        self._fg = [extents[id(c)][0] for c in self.cases]
        self._brain_xy = [extents[id(c)][1] for c in self.cases]

    @staticmethod
    def _brain_extent(case: Case):
        """In-plane (x, y) bounding box of the brain, or None (then the whole slice)."""
        if case.brain is None or not np.any(case.brain):
            return None
        xy = np.asarray(case.brain).any(axis=2)
        xs, ys = np.flatnonzero(xy.any(1)), np.flatnonzero(xy.any(0))
        return (xs[0], xs[-1]), (ys[0], ys[-1])

    def _foreground(self, case: Case):
        lab = case.labels.get(self.target)
        if lab is None or not np.any(lab):
            return None
        idx = np.argwhere(np.asarray(lab) > 0)
        return idx.min(0), idx.max(0), idx.mean(0)

    def set_epoch(self, epoch: int, site_strength: float = 0.0) -> None:
        """Select the epoch's random stream and the curriculum's site-simulation strength."""
        self.epoch = int(epoch)
        self.site_strength = float(site_strength)

    def set_hard_negatives(self, centres: dict[str, np.ndarray]) -> None:
        """Each patient's (subject's) hard-negative centres, voxel (x, y, z) rows; replaces earlier ones."""
        self.hard_centres = {k: np.asarray(v, np.int64).reshape(-1, 3) for k, v in centres.items()}

    def __len__(self) -> int:
        return 2 * len(self.cases)

    def origin(self, i: int) -> tuple[str, tuple[int, int, int]]:
        """Item ``i``'s kind (``positive``, ``negative`` or ``hard``) and stack corner (x0, y0, z0)."""
        _, kind, corner = self._draw(np.random.default_rng([self.seed, self.epoch, i]), i)
        return kind, corner

    def _draw(self, rng, i: int) -> tuple[int, str, tuple[int, int, int]]:
        """(case index, kind, corner) of item ``i``: the first draws of its generator, in a fixed order."""
        case_i, positive = i // 2, (i % 2 == 0) or rng.random() < self.fg_oversample
        centre = None if positive else self._hard_centre(rng, case_i)
        kind = "positive" if positive else "negative" if centre is None else "hard"
        return case_i, kind, self._window(rng, case_i, positive, centre)

    def _hard_centre(self, rng, case_i: int):
        """A mined false-positive centre for a negative slot, or None; draws nothing where none are mined."""
        centres = self.hard_centres.get(self.cases[case_i].subject)
        if self.hard_share <= 0 or centres is None or len(centres) == 0:
            return None  # no draw: without hard negatives every item's stream is what it always was
        if rng.random() >= self.hard_share:
            return None
        return centres[int(rng.integers(len(centres)))]

    def _around(self, rng, lo, hi, ctr, Z: int):
        """A stack's first slice and in-plane centre holding the z range [lo, hi] around ``ctr``, jittered."""
        s, (h, w) = self.stack, self.crop
        z_lo, z_hi = max(0, hi[2] - s + 1), min(lo[2], max(0, Z - s))
        z0 = int(rng.integers(min(z_lo, z_hi), max(z_lo, z_hi) + 1))
        cx, cy = ctr[0] + rng.uniform(-h / 4, h / 4), ctr[1] + rng.uniform(-w / 4, w / 4)
        return z0, cx, cy

    def _window(self, rng, case_i: int, positive: bool, hard_centre=None):
        case = self.cases[case_i]
        X, Y, Z = case.shape
        s, (h, w) = self.stack, self.crop
        fg = self._fg[case_i]
        if fg is not None:
            lo, hi, ctr = fg
        if positive and fg is not None:
            z0, cx, cy = self._around(rng, lo, hi, ctr, Z)
        elif hard_centre is not None:  # the false positive in the stack, off-centre as a target is
            z0, cx, cy = self._around(rng, hard_centre, hard_centre, hard_centre, Z)
        else:
            if fg is not None:  # neighbouring thrombus-free slices, above or below the target
                above = list(range(hi[2] + 1, max(hi[2] + 1, Z - s) + 1))
                below = list(range(0, max(0, lo[2] - s) + 1)) if lo[2] - s >= 0 else []
                near = [z for z in above[:s] + below[-s:]] or list(range(max(1, Z - s + 1)))
                z0 = int(rng.choice(near))
                if self.negatives == "near":
                    cx, cy = ctr[0] + rng.uniform(-h / 4, h / 4), ctr[1] + rng.uniform(-w / 4, w / 4)
                else:  # vessels, veins and microbleeds of the whole slice are the false positives to learn
                    (x_lo, x_hi), (y_lo, y_hi) = self._brain_xy[case_i] or ((0, X - 1), (0, Y - 1))
                    cx, cy = rng.uniform(x_lo, x_hi + 1), rng.uniform(y_lo, y_hi + 1)
            else:
                z0 = int(rng.integers(0, max(1, Z - s + 1)))
                cx, cy = rng.uniform(h / 2, max(h / 2, X - h / 2)), rng.uniform(w / 2, max(w / 2, Y - w / 2))
        x0 = int(np.clip(round(cx - h / 2), min(0, X - h), max(0, X - h)))
        y0 = int(np.clip(round(cy - w / 2), min(0, Y - w), max(0, Y - w)))
        return x0, y0, z0

    @staticmethod
    def _crop(arr, x0, y0, z0, h, w, s):
        """Crop (x, y, z) -> (s, h, w), zero-padding outside the volume."""
        X, Y, Z = arr.shape
        out = np.zeros((h, w, s), np.float32)
        xs, ys, zs = slice(max(x0, 0), min(x0 + h, X)), slice(max(y0, 0), min(y0 + w, Y)), slice(max(z0, 0), min(z0 + s, Z))
        out[xs.start - x0:xs.stop - x0, ys.start - y0:ys.stop - y0, zs.start - z0:zs.stop - z0] = arr[xs, ys, zs]
        return out.transpose(2, 0, 1)

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng([self.seed, self.epoch, i])
        case_i, _, (x0, y0, z0) = self._draw(rng, i)
        case = self.cases[case_i]
        (h, w), s = self.crop, self.stack
        arrays, avail = case.inputs(self.modalities)
        x = np.zeros((len(arrays), s, h, w), np.float32)
        for m, arr in enumerate(arrays):
            if arr is not None:
                x[m] = self._crop(arr, x0, y0, z0, h, w, s)
        lab = case.labels.get(self.target)
        y = self._crop(lab, x0, y0, z0, h, w, s) if lab is not None else np.zeros((s, h, w), np.float32)
        if self.augment is not None:
            x, y = self._augment(rng, x, y, avail)
        return {"x": torch.from_numpy(np.ascontiguousarray(x)), "available": torch.from_numpy(avail),
                "y": torch.from_numpy(np.ascontiguousarray(y > 0.5).astype(np.int64))}

    def _augment(self, rng, x, y, avail):
        a = self.augment
        if a.flip and rng.random() < 0.5:  # left-right: stroke side is not a prior to learn
            x, y = x[:, :, ::-1], y[:, ::-1]
        if a.rotate_deg > 0:
            ang = rng.uniform(-a.rotate_deg, a.rotate_deg)
            x = ndimage.rotate(x, ang, axes=(2, 3), reshape=False, order=1, mode="constant")
            y = ndimage.rotate(y.astype(np.float32), ang, axes=(1, 2), reshape=False, order=1, mode="constant")
        st = self.site_strength
        h, w = x.shape[2:]
        u, v = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
        for m in np.flatnonzero(avail):
            ch = x[m]
            gain = 1 + rng.normal(0, a.scale_std + a.site_shift_std * st)
            shift = rng.normal(0, a.site_shift_std * st)
            if st > 0 and a.site_bias > 0:  # smooth multiplicative bias field, like a coil profile
                c = rng.normal(0, a.site_bias * st, 3)
                ch = ch * np.exp(c[0] * u + c[1] * v + c[2] * u * v)[None]
            if a.gamma_std > 0:  # gamma on the [0, 1]-rescaled channel keeps the order of intensities
                lo, hi = ch.min(), ch.max()
                if hi > lo:
                    g = np.exp(rng.normal(0, a.gamma_std))
                    ch = ((ch - lo) / (hi - lo)) ** g * (hi - lo) + lo
            ch = ch * gain + shift
            ch = ch + rng.normal(0, a.noise_std + a.site_noise_std * st, ch.shape)
            x[m] = ch
        return x.astype(np.float32), y
