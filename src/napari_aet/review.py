"""What a person reviewing an atom looks at: the volume on three orthogonal planes through it,
next to the same planes averaged over each class of atoms (Qt-free).

Positions are (x, y, z) in Å in the specimen frame, origin at the rotation centre
(docs/conventions.md); volumes are ``(nz, ny, nx)``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .atom_labels import NON_ATOM, labels, model_elements
from .geometry import specimen_to_voxel
from .model import AtomModel, InputError, Reconstruction

#: The planes of :func:`orthogonal_slices`: (name, the two volume axes (z=0, y=1, x=2) spanning
#: it, as rows then columns).
PLANES = (("xy", (1, 2)), ("xz", (0, 2)), ("yz", (0, 1)))


def orthogonal_slices(reconstruction: Reconstruction, positions, *, half_width=2.0) -> np.ndarray:
    """The volume on the xy, xz and yz planes through each position.

    positions : ``(N, 3)`` (x, y, z) Å. half_width : Å from the position to the edge of each
        square slice, sampled once per voxel (trilinear interpolation, zero outside the volume).

    Returns ``(N, 3, m, m)`` float32, planes in the order of :data:`PLANES` (xy: rows y, columns
    x; xz: rows z, columns x; yz: rows z, columns y), ``m = 2 * round(half_width / voxel) + 1``.
    """
    volume, voxel = np.asarray(reconstruction.volume, np.float32), reconstruction.voxel_size
    if not half_width > 0:
        raise InputError(f"half_width must be a positive distance in Å, got {half_width}")
    reach = max(1, int(round(half_width / voxel)))
    r = np.arange(-reach, reach + 1, dtype=float)
    rows, cols = np.meshgrid(r, r, indexing="ij")
    offsets = np.zeros((len(PLANES), len(r), len(r), 3))
    for k, (_, (row_axis, col_axis)) in enumerate(PLANES):
        offsets[k, ..., row_axis], offsets[k, ..., col_axis] = rows, cols
    centres = specimen_to_voxel(np.reshape(np.asarray(positions, float), (-1, 3)), volume.shape, voxel)
    points = centres[:, None, None, None, :] + offsets[None]
    values = ndimage.map_coordinates(volume, points.reshape(-1, 3).T, order=1, mode="constant", cval=0.0)
    return values.reshape(points.shape[:-1]).astype(np.float32)


def class_average_slices(reconstruction: Reconstruction, atoms: AtomModel, *, half_width=2.0) -> dict:
    """The :func:`orthogonal_slices` averaged over the atoms of each label: ``{label: (3, m, m)}``
    for each element of the model (lightest first), then "non-atom" if there are any."""
    slices = orthogonal_slices(reconstruction, atoms.positions, half_width=half_width)
    names = labels(atoms)
    return {name: slices[names == name].mean(axis=0)
            for name in (*model_elements(atoms), NON_ATOM) if np.any(names == name)}
