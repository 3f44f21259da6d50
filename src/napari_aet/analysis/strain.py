"""Strain from the displacements of the atoms from their fitted lattice sites.

The displacement field u(r) is a normalised Gaussian kernel average of the atoms' displacements
(u = G * (Σ dᵢ δ(r − sᵢ)) / G * (Σ δ(r − sᵢ)), at the site positions sᵢ, kernel FWHM ``fwhm`` Å), on
a grid of ``voxel_size`` Å centred on the origin; the strain tensor is its symmetric gradient
ε_ab = ½(∂u_a/∂x_b + ∂u_b/∂x_a) (central differences). A homogeneous strain ε of the crystal
displaces each atom by ε·(r − origin), which this recovers up to the rotation and, when the lattice
constant is fitted, the isotropic part that the fit absorbs (give ``lattice_constant`` to keep it).
Voxels where the kernel-weighted atom density is below half its interior value are 0 (``mask`` False).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..model import AtomModel, InputError

#: Strain components, (x, y, z) specimen axes.
COMPONENTS = ("xx", "yy", "zz", "xy", "xz", "yz")
DEFAULT_FWHM = 10.0


@dataclass
class StrainField:
    """Smoothed displacement and strain on a grid.

    displacement : float32 ``(3, nz, ny, nx)``, (u_x, u_y, u_z) in Å.
    strain : dict component ("xx" … "yz") -> float32 ``(nz, ny, nx)`` (dimensionless; 0 outside).
    mask : bool ``(nz, ny, nx)``, True inside the particle.
    voxel_size : Å; voxel n // 2 on each axis is at the origin (x, y, z) = 0.
    """

    displacement: np.ndarray
    strain: dict
    mask: np.ndarray
    voxel_size: float


def strain_field(atoms: AtomModel, *, voxel_size=2.0, fwhm=DEFAULT_FWHM, margin=2.0) -> StrainField:
    """Displacement and strain volumes from atoms with ``displacement_x/_y/_z`` columns
    (:func:`~napari_aet.analysis.lattice.fit_lattice`).

    voxel_size : grid spacing (Å). fwhm : full width at half maximum of the smoothing kernel (Å,
    about 1 nm). margin : grid extent beyond the outermost atom (Å).
    """
    if not {"displacement_x", "displacement_y", "displacement_z"} <= set(atoms.features):
        raise InputError("strain needs the atoms' displacements from a fitted lattice (fit_lattice first)")
    if voxel_size <= 0 or fwhm <= 0:
        raise InputError(f"voxel size and kernel width must be positive Å, got {voxel_size} and {fwhm}")
    d = np.stack([atoms.features[f"displacement_{c}"] for c in "xyz"], axis=1)
    sites = atoms.positions - d
    half = int(np.ceil((np.abs(sites).max() + margin) / voxel_size))
    shape = (2 * half + 1,) * 3
    scaled = sites[:, ::-1] / voxel_size + half  # (z, y, x) voxel coordinates
    sigma = fwhm / (2 * np.sqrt(2 * np.log(2))) / voxel_size
    density = _splat(scaled, np.ones(len(sites)), shape, sigma)
    u = np.stack([_splat(scaled, d[:, c], shape, sigma) for c in range(3)]) / np.maximum(density, 1e-12)
    interior = density > 0.5 * np.percentile(density[density > 1e-6 * density.max()], 90)
    gradient = [np.gradient(u[a], voxel_size) for a in range(3)]  # gradient[a][axis], axis in (z, y, x)
    axis = {"x": 2, "y": 1, "z": 0}
    strain = {}
    for name in COMPONENTS:
        a, b = "xyz".index(name[0]), "xyz".index(name[1])
        value = 0.5 * (gradient[a][axis[name[1]]] + gradient[b][axis[name[0]]])
        strain[name] = np.where(interior, value, 0).astype(np.float32)
    return StrainField(np.where(interior, u, 0).astype(np.float32), strain, interior, float(voxel_size))


def _splat(coordinates, values, shape, sigma) -> np.ndarray:
    """Values spread onto the grid with trilinear weights, then Gaussian-smoothed."""
    grid = np.zeros(shape, np.float64)
    base = np.floor(coordinates).astype(np.int64)
    frac = coordinates - base
    for corner in np.ndindex(2, 2, 2):
        weight = np.prod(np.where(corner, frac, 1 - frac), axis=1) * values
        np.add.at(grid, tuple((base + corner).T), weight)
    return ndimage.gaussian_filter(grid, sigma)
