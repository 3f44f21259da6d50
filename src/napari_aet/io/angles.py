"""Tilt-angle files: IMOD ``.tlt``/``.rawtlt`` (one angle per line) and GENFIRE Euler tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..geometry import radians_message, radians_suspected
from ..model import InputError
from .files import atomic_write, existing_file

#: Sidecar names searched beside a data file ``<stem>.<ext>``, in this order (an IMOD raw stack,
#: ``.st``, prefers its ``.rawtlt``: :func:`find_angle_file`).
SIDECAR_PATTERNS = ("{stem}.tlt", "{stem}.rawtlt", "{stem}_angles.txt", "{stem}.angles.txt")
#: A ``.tlt`` and a ``.rawtlt`` of one stack agree when their difference is a common offset of at
#: most the first number (degrees; tiltalign may add an angle offset) plus at most the second at
#: every projection (it refines each angle by a degree or so).
IMOD_ANGLE_TOLERANCE = (10.0, 2.0)


class SidecarConflict(InputError):
    """A stack's ``.tlt`` and ``.rawtlt`` disagree: which one fits it is not known."""


def _parse_text(path: Path) -> np.ndarray:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            rows.append([float(v) for v in line.replace(",", " ").split()])
        except ValueError:
            raise InputError(f"angle file {path.name}, line {number}: {line!r} is not a number; "
                             "expected one angle (degrees) or three Euler angles per line") from None
        if len(rows[-1]) != len(rows[0]):
            raise InputError(f"angle file {path.name}, line {number}: {len(rows[-1])} values where "
                             f"earlier lines have {len(rows[0])}")
    if not rows:
        raise InputError(f"angle file {path.name} holds no angles")
    return np.array(rows, dtype=np.float64)


def _load_array(path: Path) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        return np.load(path, allow_pickle=False)
    from .arrays import read_mat

    return read_mat(path)


def read_angles(path) -> np.ndarray:
    """Tilt angles in degrees from a file.

    Text files (``.tlt``, ``.rawtlt``, ``.txt``, ``.csv`` ...) hold one angle per line or
    three Euler angles (phi, theta, psi; GENFIRE's ZYZ convention) per line, separated by
    spaces or commas; blank lines and ``#`` comments are skipped. GENFIRE ``.npy``/``.mat``
    tables of shape ``(n, 3)`` (or ``(3, n)``) are read too.

    Returns ``(n,)`` single-axis tilts or ``(n, 3)`` Euler angles, float64; Euler triples whose
    φ and ψ are all 0 are single-axis tilts θ, returned as ``(n,)`` (so the series can be aligned).
    """
    path = existing_file(path)
    if path.suffix.lower() in (".npy", ".mat"):
        try:
            angles = np.asarray(_load_array(path), dtype=np.float64)
        except (OSError, ValueError, TypeError) as exc:
            raise InputError(f"cannot read angles from {path.name}: {exc}") from None
    else:
        angles = _parse_text(path)
    angles = np.squeeze(angles)
    if angles.ndim == 2 and angles.shape[0] == 3 and angles.shape[1] != 3:
        angles = angles.T
    angles = np.atleast_1d(angles)
    if not (angles.ndim == 1 or (angles.ndim == 2 and angles.shape[1] == 3)):
        raise InputError(f"angle file {path.name} has shape {angles.shape}: expected one angle per "
                         "line or three Euler angles (phi theta psi) per line; remove any index or dose "
                         "column, and write decimals with a point (a decimal comma splits a number in two)")
    if not np.all(np.isfinite(angles)):
        raise InputError(f"angle file {path.name} contains NaN or Inf values")
    if angles.ndim == 2 and len(angles) > 3 and any(np.array_equal(angles[:, 0], np.arange(len(angles)) + start)
                                                    for start in (0, 1)):
        raise InputError(f"angle file {path.name}: the first column counts {angles[0, 0]:g}, {angles[1, 0]:g}, "
                         f"{angles[2, 0]:g} …, an index, not Euler angles: keep only the tilt angle column")
    if angles.ndim == 2 and not np.any(angles[:, [0, 2]]):  # (0, θ, 0) triples: single-axis tilts, alignable
        angles = angles[:, 1]
    if radians_suspected(angles):
        raise InputError(radians_message(angles, path.name))
    return angles


def write_angles(path, angles) -> Path:
    """Write angles (degrees) as text, one angle or one Euler triple per line, atomically."""
    angles = np.asarray(angles, dtype=np.float64)
    with atomic_write(path) as temporary:
        np.savetxt(temporary, angles.reshape(len(angles), -1), fmt="%.10g")
    return Path(path)


def find_angle_file(path) -> Path | None:
    """The angle sidecar of data file ``path``: the first of SIDECAR_PATTERNS that exists, except
    that a raw IMOD stack (``.st``) takes its ``.rawtlt`` before a ``.tlt`` (tiltalign's output,
    which belongs with the aligned ``.ali``); None if there is none.

    When both a ``.tlt`` and a ``.rawtlt`` exist they must agree (the same count, and the same
    angles up to a common offset and a small refinement each, :data:`IMOD_ANGLE_TOLERANCE`), or
    :class:`SidecarConflict` says so: e.g. a ``.tlt`` sorted by angle beside a stack and
    ``.rawtlt`` in acquisition order.
    """
    path = Path(path)
    found = [candidate for candidate in (path.with_name(p.format(stem=path.stem)) for p in SIDECAR_PATTERNS)
             if candidate.is_file()]
    imod = {candidate.suffix.lower(): candidate for candidate in found if candidate.suffix.lower() in (".tlt", ".rawtlt")}
    if len(imod) == 2:
        tlt, raw = read_angles(imod[".tlt"]), read_angles(imod[".rawtlt"])
        offset_limit, angle_limit = IMOD_ANGLE_TOLERANCE
        if tlt.shape != raw.shape:
            detail = f"{imod['.tlt'].name} holds {len(tlt)} angles, {imod['.rawtlt'].name} {len(raw)}"
        else:
            difference = tlt - raw
            offset = float(np.median(difference))
            off = np.abs(difference - offset)
            detail = (f"by up to {off.max():.1f}° (projection {int(np.argmax(off))})" if off.max() > angle_limit
                      else f"by {offset:.1f}° throughout" if abs(offset) > offset_limit else "")
        if detail:
            raise SidecarConflict(f"{imod['.tlt'].name} and {imod['.rawtlt'].name} beside {path.name} disagree "
                                  f"({detail}): give the one whose order matches the images with --angles")
        if path.suffix.lower() == ".st":
            return imod[".rawtlt"]
    return found[0] if found else None
