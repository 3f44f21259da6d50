"""Length units found in microscope metadata, converted to Å."""

from __future__ import annotations

import math

#: Å per unit, keyed by the lower-case spellings found in TIFF, MRC, EMD and DM metadata.
ANGSTROM_PER_UNIT = {
    "a": 1.0, "å": 1.0, "angstrom": 1.0, "angstroms": 1.0, "\\u00c5": 1.0,
    "nm": 10.0, "nanometer": 10.0, "nanometers": 10.0, "nanometre": 10.0,
    "pm": 0.01, "picometer": 0.01,
    "um": 1e4, "µm": 1e4, "μm": 1e4, "micron": 1e4, "microns": 1e4, "micrometer": 1e4, "\\u00b5m": 1e4,
    "mm": 1e7, "m": 1e10,
}


def to_angstrom(value, unit) -> float | None:
    """``value`` in ``unit`` converted to Å, or None when the unit is unknown or the value unusable."""
    if isinstance(unit, bytes):
        unit = unit.decode("utf-8", "replace")
    factor = ANGSTROM_PER_UNIT.get(str(unit).strip().lower())
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    if factor is None or not math.isfinite(value) or value <= 0:
        return None
    return value * factor
