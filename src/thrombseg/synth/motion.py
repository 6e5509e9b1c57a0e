"""Known rigid motions for testing registration: draw one, apply it to a header, measure the error.

A motion ``S`` is a 4x4 matrix in ITK/ANTs physical (LPS, mm) coordinates, with the convention of
:mod:`thrombseg.preprocessing.registration`: the moved image is ``moving(y) = original(S y)``.
"""

from __future__ import annotations

import ants
import numpy as np
from scipy.spatial.transform import Rotation


def random_rigid(rng: np.random.Generator, max_angle_deg: float = 15.0, max_shift_mm: float = 10.0,
                 center=(0.0, 0.0, 0.0)) -> np.ndarray:
    """A random rigid matrix: rotation <= max_angle about ``center`` and translation <= max_shift."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(rng.uniform(0.3, 1.0) * max_angle_deg)
    r = Rotation.from_rotvec(axis * angle).as_matrix()
    shift = rng.normal(size=3)
    shift *= rng.uniform(0.3, 1.0) * max_shift_mm / np.linalg.norm(shift)
    c = np.asarray(center, float)
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = c - r @ c + shift
    return m


def move_header(img: ants.ANTsImage, m: np.ndarray) -> ants.ANTsImage:
    """``img`` moved by the rigid ``m`` through its geometry only (same voxels, no interpolation).

    The result satisfies ``moved(y) = img(m y)``, like ``resample(img, img, m)`` but exactly, and its
    grid becomes oblique: a patient who moved between two series, as the scanner records it.
    """
    inv = np.linalg.inv(np.asarray(m, float))
    out = img.clone()
    out.set_direction(inv[:3, :3] @ np.asarray(img.direction, float))
    out.set_origin(tuple((inv[:3, :3] @ np.asarray(img.origin, float) + inv[:3, 3]).tolist()))
    return out


def motion_magnitude(m: np.ndarray) -> tuple[float, float]:
    """(rotation angle in degrees, translation of the rotation centre-free part in mm)."""
    ang = np.degrees(np.arccos(np.clip((np.trace(m[:3, :3]) - 1) / 2, -1, 1)))
    return float(ang), float(np.linalg.norm(m[:3, 3]))


def transform_points(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """The (n, 3) points ``pts`` mapped through the 4x4 matrix ``m``."""
    return pts @ np.asarray(m)[:3, :3].T + np.asarray(m)[:3, 3]


def registration_error_mm(estimated: np.ndarray, applied: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Per-point error after recovering a known motion.

    ``applied`` (S) made the moving image ``moving(y) = original(S y)``; the registration ``estimated``
    (T, fixed->moving) is perfect when ``S(T(x)) = x``. Returns ``|S(T(x)) - x|`` for every point.
    """
    return np.linalg.norm(transform_points(applied, transform_points(estimated, points)) - points, axis=1)
