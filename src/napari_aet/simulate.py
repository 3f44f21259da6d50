"""Synthetic nanoparticles and ADF-STEM-like tilt series with their ground truth.

Used for napari sample data, tests and benchmarks. Projections are computed
analytically from the atoms (pixel-integrated Gaussians) through the one geometry
of :mod:`napari_aet.geometry`, never through the voxel projector used for
reconstruction, so tests do not commit the "inverse crime".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from .geometry import in_plane_rotation, project_atoms
from .model import ATOMIC_NUMBERS, AtomModel, InputError, TiltSeries, check_elements

#: fcc lattice constant of FePt (Å).
FEPT_LATTICE = 3.85


def fcc_particle(radius=14.0, lattice=FEPT_LATTICE, elements=("Fe", "Pt"), ordered_fraction=0.5,
                 antisite=0.02, jitter=0.05, seed=0) -> AtomModel:
    """A faceted fcc binary-alloy particle (FePt by default) as ground truth.

    A sphere of ``radius`` Å truncated by {111} and {100} facets, with an L1_0-ordered
    region (alternating (001) planes of the two elements) holding about
    ``ordered_fraction`` of the atoms, a chemically disordered remainder, a fraction
    ``antisite`` of swapped sites in the ordered region, a random orientation and
    Gaussian thermal jitter of ``jitter`` Å (rms per axis). Deterministic for a seed.
    Returned positions are (x, y, z) Å centred on the particle's centroid.
    """
    light, heavy = check_elements(elements)
    if radius <= lattice:
        raise InputError(f"radius {radius} Å is too small for lattice constant {lattice} Å")
    rng = np.random.default_rng(seed)
    n = int(np.ceil(radius / lattice * 2)) + 2
    grid = np.stack(np.meshgrid(*(np.arange(-n, n + 1),) * 3, indexing="ij"), -1).reshape(-1, 3)
    sites = grid[grid.sum(axis=1) % 2 == 0]  # fcc sites in units of lattice/2
    r = sites * (lattice / 2)
    inside = (np.linalg.norm(r, axis=1) <= radius) & (np.abs(r).max(axis=1) <= 0.9 * radius)
    inside &= (np.abs(r).sum(axis=1) <= 1.45 * radius)
    sites, r = sites[inside], r[inside]

    order_axis = rng.normal(size=3)
    order_axis /= np.linalg.norm(order_axis)
    depth = r @ order_axis
    ordered = depth <= np.quantile(depth, ordered_fraction) if ordered_fraction > 0 else np.zeros(len(r), bool)
    is_heavy = np.where(ordered, sites[:, 2] % 2 == 0, rng.random(len(r)) < 0.5)
    swap = ordered & (rng.random(len(r)) < antisite)
    is_heavy ^= swap

    rotation = Rotation.random(random_state=rng).as_matrix()
    positions = r @ rotation.T + rng.normal(scale=jitter, size=r.shape)
    positions -= positions.mean(axis=0)
    species = np.where(is_heavy, heavy, light).astype(object)
    return AtomModel(positions, species, {"ordered": ordered, "antisite": swap})


def fcc_slab(size=(60.0, 30.0), thickness=12.0, lattice=FEPT_LATTICE, element="Pt", jitter=0.1,
             seed=0) -> AtomModel:
    """A film as ground truth: a slab of a randomly oriented single-element fcc crystal.

    size : (x, y) extent in Å; thickness : extent along z (the beam at 0° tilt), Å; the slab is
    centred on the origin. jitter : Gaussian displacement of every atom, Å rms per axis.
    Made wider than the field of view it is an extended object: at high tilt, atoms outside the
    box enter the views. Deterministic for a seed; positions (x, y, z) Å.
    """
    element = check_elements([element])[0]
    extent = np.array([*size, thickness], dtype=np.float64)
    if np.any(extent <= lattice / 2):
        raise InputError(f"the slab ({size[0]} x {size[1]} x {thickness} Å) must be thicker and wider than "
                         f"half the lattice constant {lattice} Å")
    rng = np.random.default_rng(seed)
    n = int(np.ceil(np.linalg.norm(extent) / lattice)) + 1
    grid = np.stack(np.meshgrid(*(np.arange(-n, n + 1),) * 3, indexing="ij"), -1).reshape(-1, 3)
    sites = grid[grid.sum(axis=1) % 2 == 0] * (lattice / 2)  # fcc sites
    positions = sites @ Rotation.random(random_state=rng).as_matrix().T
    positions = positions[np.all(np.abs(positions) <= extent / 2, axis=1)]
    positions += rng.normal(scale=jitter, size=positions.shape)
    return AtomModel(positions, np.full(len(positions), element, dtype=object))


def amorphous_slab(size=(40.0, 40.0), thickness=16.0, min_distance=2.4, density=0.045, elements=("Ta",),
                   seed=0) -> AtomModel:
    """An amorphous film as ground truth, by random sequential addition: uniform random points in the
    slab, each kept unless closer than ``min_distance`` Å to one kept before, until ``density``
    atoms / Å³ (0.045 at 2.4 Å is a packing fraction of 0.33, below the 0.38 where addition jams).

    size : (x, y) extent in Å; thickness : along z, Å; centred on the origin. elements : each atom
    takes one at random, equally likely. Deterministic for a seed; positions (x, y, z) Å.
    """
    elements = check_elements(elements)
    extent = np.array([*size, thickness], dtype=np.float64)
    if np.any(extent <= min_distance) or min_distance <= 0 or density <= 0:
        raise InputError(f"the slab ({size[0]} x {size[1]} x {thickness} Å) must be larger than the minimum "
                         f"distance {min_distance} Å, and that and the density {density} / Å³ positive")
    rng = np.random.default_rng(seed)
    target = int(density * extent.prod())
    kept = np.zeros((0, 3))
    for _ in range(200):
        batch = rng.uniform(-extent / 2, extent / 2, size=(4 * target, 3))
        if len(kept):
            batch = batch[np.isinf(cKDTree(kept).query(batch, distance_upper_bound=min_distance)[0])]
        keep = np.ones(len(batch), bool)
        for i, j in sorted(cKDTree(batch).query_pairs(min_distance), key=lambda pair: pair[1]):
            keep[j] &= not keep[i]  # in order: j goes if an earlier kept point is too close
        kept = np.vstack([kept, batch[keep]])[:target]
        if len(kept) == target:
            return AtomModel(kept, rng.choice(np.array(elements, dtype=object), size=target))
    raise InputError(f"random sequential addition did not reach {density} atoms / Å³ at a minimum distance "
                     f"of {min_distance} Å: ask for a lower density")


@dataclass
class SimulatedData:
    """A synthetic tilt series and the truth behind it.

    tilt_series : what a microscope would give (``shifts`` zero, unaligned).
    atoms : the true atoms, (x, y, z) Å about the rotation centre.
    true_shifts : ``(n, 2)`` (dy, dx) pixels that would align each projection.
    frames : ``(n, n_frames, ny, nx)`` raw frames when more than one frame per angle.
    frame_drift : ``(n, n_frames, 2)`` (dy, dx) displacement of each frame, pixels.
    """

    tilt_series: TiltSeries
    atoms: AtomModel
    true_shifts: np.ndarray
    frames: np.ndarray | None = None
    frame_drift: np.ndarray | None = None


def adf_amplitudes(species, dose, exponent=1.7) -> np.ndarray:
    """Integrated counts per atom per projection, ∝ Z**exponent; the heaviest element gets ``dose``."""
    z = np.array([ATOMIC_NUMBERS[s] for s in species], dtype=np.float64)
    return dose * (z / z.max()) ** exponent if len(z) else z


def simulate_tilt_series(atoms: AtomModel, angles=None, shape=(128, 128), pixel_size=0.4,
                         dose=400.0, blur=0.55, exponent=1.7, max_shift=3.0, tilt_axis=0.0, axis_offset=0.0,
                         background=0.0, n_frames=1, frame_drift=0.0, seed=0) -> SimulatedData:
    """An ADF-STEM-like tilt series of ``atoms``.

    angles : tilts in degrees (default 51 over ±70°, a missing wedge) or ``(n, 3)`` Euler.
    shape : (ny, nx) pixels; pixel_size : Å.
    dose : mean detected counts per atom of the heaviest element per projection;
        ``None`` gives noiseless images in those units. Noise is Poisson.
    blur : Gaussian width (Å, rms) of each atom's image (probe and thermal motion).
    exponent : ADF contrast, intensity ∝ Z**exponent.
    max_shift : random per-projection displacement, uniform in ±max_shift pixels.
    tilt_axis : in-plane tilt-axis direction, degrees from the image y axis.
    axis_offset : pixels by which the rotation axis lies off the image centre, perpendicular
        to the axis (along u, :func:`napari_aet.geometry.in_plane_rotation`); every
        projection is displaced by it, and ``true_shifts`` undo it.
    background : mean counts per pixel of a smooth, slowly varying background.
    n_frames, frame_drift : frames per angle, each displaced by a random walk of
        ``frame_drift`` pixels rms per step; the dose is split between them.
    """
    rng = np.random.default_rng(seed)
    angles = np.linspace(-70, 70, 51) if angles is None else np.asarray(angles, dtype=np.float64)
    n = len(angles)
    amplitudes = adf_amplitudes(atoms.species, 1.0 if dose is None else dose, exponent)
    x, y = in_plane_rotation(tilt_axis)[:, 0] * axis_offset
    displacement = rng.uniform(-max_shift, max_shift, size=(n, 2)) + [y, x]
    drift = np.cumsum(rng.normal(scale=frame_drift, size=(n, n_frames, 2)), axis=1)
    drift -= drift.mean(axis=1, keepdims=True)
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx] / max(shape)
    smooth = background * (1 + 0.5 * np.sin(2 * np.pi * (0.7 * xx + 0.3 * yy)))
    frames = np.empty((n, n_frames, ny, nx), dtype=np.float32)
    for f in range(n_frames):
        clean = project_atoms(atoms.positions, amplitudes / n_frames, blur, angles, shape, pixel_size,
                              tilt_axis=tilt_axis, offsets=displacement + drift[:, f])
        expected = clean + smooth / n_frames
        frames[:, f] = expected if dose is None else rng.poisson(np.maximum(expected, 0))
    elements = sorted(set(atoms.species.tolist()), key=ATOMIC_NUMBERS.get)  # lightest first, as the chain wants
    series = TiltSeries(frames.sum(axis=1), angles, pixel_size, metadata={
        "source": "napari_aet.simulate", "dose": dose, "seed": seed, "blur": blur, "elements": elements})
    return SimulatedData(series, atoms, -displacement,
                         frames if n_frames > 1 else None, drift if n_frames > 1 else None)


def sample_fept(seed=0, size=128, radius=16.0, dose=400.0, max_shift=3.0) -> SimulatedData:
    """The built-in sample: an FePt particle (~1,000 atoms), 51 tilts over ±70°, 0.4 Å pixels."""
    atoms = fcc_particle(radius=radius, seed=seed)
    return simulate_tilt_series(atoms, shape=(size, size), dose=dose, max_shift=max_shift, seed=seed)
