"""Readers and writers: tilt series, angle files, volumes, atom tables (see docs/formats.md)."""

from .angles import read_angles, write_angles
from .atoms import read_atoms, write_atoms
from .tilt_series import read_frames, read_tilt_series, write_tilt_series
from .volumes import read_volume, write_volume

__all__ = ["read_angles", "read_atoms", "read_frames", "read_tilt_series", "read_volume", "write_angles",
           "write_atoms", "write_tilt_series", "write_volume"]
