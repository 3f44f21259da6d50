"""The three data types that flow through the pipeline.

``TiltSeries`` -> ``Reconstruction`` -> ``AtomModel``. Each validates itself on
construction and raises :class:`InputError` with a message that says what was
expected. Conventions (frames, axis orders, units) are in ``docs/conventions.md``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

import numpy as np


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second: the time stamp of every record."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")

#: Atomic numbers of the elements the tool knows (symbol -> Z).
ATOMIC_NUMBERS = {
    s: z
    for z, s in enumerate(
        "H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn "
        "Ga Ge As Se Br Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce "
        "Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn "
        "Fr Ra Ac Th Pa U".split(),
        start=1,
    )
}


class InputError(ValueError):
    """Bad user input: the message says what is wrong and what was expected."""


def check_elements(elements) -> tuple[str, ...]:
    """Validate element symbols (e.g. ``"Fe,Pt"``, ``"fe, PT"``, ``"Pt Fe"`` or ``["Fe", "Pt"]``;
    case and order do not matter); returns them spelled as chemical symbols, lightest first
    (by atomic number: the order the classes take by brightness)."""
    if isinstance(elements, str):
        elements = [e for e in re.split(r"[,;\s]+", elements) if e]
    elements = tuple(e.strip()[:1].upper() + e.strip()[1:].lower() for e in elements)
    if not elements:
        raise InputError("no element given: expected symbols such as 'Fe,Pt'")
    unknown = [e for e in elements if e not in ATOMIC_NUMBERS]
    if unknown:
        raise InputError(f"unknown element symbol(s) {', '.join(map(repr, unknown))}: expected chemical symbols "
                         f"such as Fe, Pt, Au, up to U (Z = 92; heavier elements are not in napari-aet's tables)")
    if len(set(elements)) != len(elements):
        raise InputError(f"element list {','.join(elements)} repeats a symbol")
    return tuple(sorted(elements, key=ATOMIC_NUMBERS.get))


def _finite_array(name, a, ndim, dtype, items=None):
    """``a`` as ``dtype``, checked to be ``ndim``-D and finite; ``items`` names the entries along
    axis 0 (e.g. "projections") so that the error says which of them hold NaN or Inf."""
    a = np.asarray(a, dtype=dtype)
    if a.ndim != ndim:
        raise InputError(f"{name} must be a {ndim}D array, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        bad = ~np.isfinite(a)
        where = ""
        if items is not None:
            rows = np.flatnonzero(bad.reshape(len(a), -1).any(axis=1))
            where = f", in {items} {', '.join(map(str, rows[:10]))}{', …' if len(rows) > 10 else ''} (from 0)"
        raise InputError(f"{name} contains {np.count_nonzero(bad)} NaN or Inf values{where}")
    return a


def _positive(name, value):
    value = float(value)
    if not (np.isfinite(value) and value > 0):
        raise InputError(f"{name} must be a positive number of Å, got {value}")
    return value


@dataclass
class TiltSeries:
    """Projections of one particle at several orientations.

    projections : float32 ``(n_angles, ny, nx)``, image rows = y, columns = x (a float32 array
        given is kept, not copied: change it afterwards and the series changes with it).
    angles : degrees; ``(n,)`` single tilts about the tilt axis (any range, e.g. 0…177°
        or more than a half-turn; no two equal modulo 360°), or ``(n, 3)`` ZYZ
        Euler angles (phi, theta, psi) in GENFIRE's convention.
    pixel_size : Å per pixel. Not given (None): 1 Å as a placeholder, flagged
        ``metadata["pixel_size_unknown"]``, which no stage of the chain runs on.
    tilt_axis : in-plane direction of the tilt axis, degrees counter-clockwise from
        the image y axis (0 = the axis runs along y, down the image columns; direction
        (x, y) = (sin a, cos a), docs/conventions.md).
    shifts : ``(n, 2)`` translations (dy, dx) in pixels that align each projection
        (applied with :func:`scipy.ndimage.shift`); zeros until alignment.
    metadata : free-form (source file, microscope, pre-processing records).
    """

    projections: np.ndarray
    angles: np.ndarray
    pixel_size: float | None = None
    tilt_axis: float = 0.0
    shifts: np.ndarray | None = None
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        p = np.asarray(self.projections)
        if p.ndim == 2:
            raise InputError(f"expected a stack of projections (n_angles, ny, nx), got a single "
                             f"2D image of shape {p.shape}")
        self.projections = _finite_array("projections", p, 3, np.float32, items="projections")
        n, ny, nx = self.projections.shape
        if n < 2 or ny < 8 or nx < 8:
            raise InputError(f"tilt series of shape {self.projections.shape} is too small: need at "
                             "least 2 projections of 8x8 pixels")
        angles = np.asarray(self.angles, dtype=np.float64)
        if angles.ndim == 2 and angles.shape[1] == 1:
            angles = angles[:, 0]
        if not (angles.ndim == 1 or (angles.ndim == 2 and angles.shape[1] == 3)):
            raise InputError(f"angles must have shape (n,) or (n, 3) Euler angles, got {angles.shape}")
        self.angles = _finite_array("angles", angles, angles.ndim, np.float64, items="angles")
        if len(self.angles) != n:
            raise InputError(f"{n} projections but {len(self.angles)} angles: there must be one "
                             "angle (or Euler triple) per projection")
        if self.angles.ndim == 1:  # any angle: theta + 180° is the view at theta mirrored across the axis
            if len(np.unique(np.round(self.angles % 360.0, 6) % 360.0)) != n:
                raise InputError("tilt angles contain duplicates (equal modulo 360°): each projection needs "
                                 "its own angle")
        if self.pixel_size is None:
            self.pixel_size, self.metadata = 1.0, {**self.metadata, "pixel_size_unknown": True}
        self.pixel_size = _positive("pixel size", self.pixel_size)
        self.tilt_axis = float(self.tilt_axis)
        if self.shifts is None:
            self.shifts = np.zeros((n, 2))
        self.shifts = _finite_array("shifts", self.shifts, 2, np.float64)
        if self.shifts.shape != (n, 2):
            raise InputError(f"shifts must have shape ({n}, 2), got {self.shifts.shape}")
        if np.ptp(self.projections) == 0:
            raise InputError("every pixel of every projection has the same value "
                             f"({float(self.projections.flat[0]):g}): the images hold no contrast")

    @property
    def n_angles(self) -> int:
        return self.projections.shape[0]

    @property
    def is_single_axis(self) -> bool:
        return self.angles.ndim == 1

    @property
    def tilts(self) -> np.ndarray:
        """Each projection's tilt θ, degrees: the single tilts, or θ of the Euler angles."""
        return self.angles if self.is_single_axis else self.angles[:, 1]

    def half_sets(self) -> tuple[np.ndarray, np.ndarray]:
        """Indices of two interleaved halves: alternate projections in tilt order (:attr:`tilts`),
        so that each spans the whole range whatever the file's order (in a dose-symmetric
        series' own order, alternate projections put every negative tilt in one half)."""
        order = np.argsort(self.tilts, kind="stable")
        return order[0::2], order[1::2]

    def same_data(self, other: TiltSeries) -> bool:
        """Whether ``other`` holds the same projections, angles, pixel size, tilt axis and shifts
        (metadata aside)."""
        return (self.pixel_size == other.pixel_size and self.tilt_axis == other.tilt_axis
                and all(np.array_equal(getattr(self, name), getattr(other, name))
                        for name in ("angles", "shifts", "projections")))

    def replace(self, **changes) -> TiltSeries:
        """A copy with some fields changed (arrays not copied unless given); a pixel size given
        is known (``metadata["pixel_size_unknown"]`` dropped)."""
        changes.setdefault("metadata", dict(self.metadata))
        if changes.get("pixel_size") is not None:
            changes["metadata"] = {k: v for k, v in changes["metadata"].items() if k != "pixel_size_unknown"}
        return replace(self, **changes)

    def subset(self, index) -> TiltSeries:
        """The projections selected by an index array, slice or boolean mask, with their angles and
        shifts (pixel size, tilt axis and metadata kept; ``metadata["file_indices"]`` selected too)."""
        return self.replace(projections=self.projections[index], angles=self.angles[index],
                            shifts=self.shifts[index],
                            metadata={**self.metadata, "file_indices": self.file_indices(index)})

    def file_indices(self, index=slice(None)) -> list[int]:
        """Where the projections selected by ``index`` (an index array, slice or mask; default all)
        stand in the file the series was read from, counted from 0 as ``--exclude`` counts: the
        same numbers unless projections were left out (``metadata["file_indices"]``)."""
        order = np.asarray(self.metadata.get("file_indices", np.arange(self.n_angles)), dtype=np.int64)
        return np.atleast_1d(order[index]).tolist()


@dataclass
class Reconstruction:
    """A reconstructed volume.

    volume : float32 ``(nz, ny, nx)``; voxel (k_z, k_y, k_x) sits at specimen point
        ((k_x - nx//2), (k_y - ny//2), (k_z - nz//2)) * voxel_size.
    voxel_size : Å per voxel.
    method, parameters : how it was made.
    errors : per-iteration curves, e.g. ``{"r_factor": [...], "r_free": [...]}``.
    """

    volume: np.ndarray
    voxel_size: float = 1.0
    method: str = ""
    parameters: dict = field(default_factory=dict)
    errors: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        self.volume = _finite_array("volume", self.volume, 3, np.float32)
        self.voxel_size = _positive("voxel size", self.voxel_size)
        self.errors = {k: [float(v) for v in vals] for k, vals in self.errors.items()}


#: Per-atom columns every AtomModel carries, with their defaults.
DEFAULT_FEATURES = {"edited": False, "locked": False}


@dataclass
class AtomModel:
    """Atoms of one particle.

    positions : float64 ``(N, 3)`` as (x, y, z) in Å in the specimen frame, origin
        at the rotation centre.
    species : ``(N,)`` element symbols ("" where not yet classified).
    features : per-atom columns, each an ``(N,)`` array (intensity, confidence,
        fit quality, ``edited`` / ``locked`` flags ...).
    """

    positions: np.ndarray
    species: np.ndarray | None = None
    features: dict = field(default_factory=dict)

    def __post_init__(self):
        pos = np.asarray(self.positions, dtype=np.float64)
        if pos.size == 0:
            pos = pos.reshape(0, 3)
        if pos.ndim != 2 or pos.shape[1] != 3:
            raise InputError(f"atom positions must have shape (N, 3), got {pos.shape}")
        self.positions = _finite_array("atom positions", pos, 2, np.float64)
        n = len(pos)
        species = np.full(n, "", dtype=object) if self.species is None else np.asarray(self.species, dtype=object)
        if species.shape != (n,):
            raise InputError(f"{n} atoms but {species.shape[0]} species labels")
        known = set(species.tolist()) - {""}
        if known:
            check_elements(sorted(known))
        self.species = species
        features = {k: np.asarray(v) for k, v in self.features.items()}
        for name, default in DEFAULT_FEATURES.items():
            features.setdefault(name, np.full(n, default))
        for name, col in features.items():
            if col.shape != (n,):
                raise InputError(f"feature {name!r} has shape {col.shape}, expected ({n},)")
        self.features = features

    def __len__(self) -> int:
        return len(self.positions)

    def subset(self, index) -> AtomModel:
        """The atoms selected by a boolean mask or index array."""
        return AtomModel(self.positions[index], self.species[index],
                         {k: v[index] for k, v in self.features.items()})

    def with_features(self, **columns) -> AtomModel:
        """A copy with per-atom columns added or replaced."""
        return AtomModel(self.positions, self.species, {**self.features, **columns})

    def to_frame(self):
        """A pandas DataFrame with columns x, y, z, element, then the features."""
        import pandas as pd

        frame = pd.DataFrame(self.positions, columns=["x", "y", "z"])
        frame["element"] = self.species.astype(str)
        for name, col in self.features.items():
            frame[name] = col
        return frame

    @classmethod
    def from_frame(cls, frame) -> AtomModel:
        """Inverse of :meth:`to_frame`; needs columns x, y, z (Å); element optional."""
        missing = {"x", "y", "z"} - set(frame.columns)
        if missing:
            raise InputError(f"atom table lacks column(s) {sorted(missing)}: expected x,y,z,element")
        species = frame["element"].fillna("").astype(str).to_numpy(dtype=object) if "element" in frame else None
        features = {c: frame[c].to_numpy() for c in frame.columns if c not in ("x", "y", "z", "element")}
        return cls(frame[["x", "y", "z"]].to_numpy(float), species, features)


def real_atoms(atoms: AtomModel) -> AtomModel:
    """The atoms without the non-atoms (feature ``non_atom``: peaks classified as noise, atoms the
    refinement removed), which a model keeps (hidden in napari) but no atom table or analysis counts."""
    non_atom = atoms.features.get("non_atom")
    return atoms if non_atom is None else atoms.subset(~np.asarray(non_atom, bool))
