"""Ordered nuclei: connected sets of atoms of one ordered phase and variant, and the order volume.

Two atoms are connected when their sites are nearest neighbours (the 12 of fcc, 8 of bcc) and they
have the same phase and variant. A component of at least ``min_atoms`` atoms is a nucleus; its core
is its atoms whose order parameter (of its phase) is at least ``core_order``; its boundary, its
atoms with a nearest neighbour outside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse.csgraph import connected_components

from ..model import AtomModel, InputError
from .lattice import Lattice
from .order import site_neighbours

DEFAULT_MIN_ATOMS = 13
DEFAULT_CORE_ORDER = 0.7
#: Iso-surface levels of the order volume used in the literature.
ISO_LEVELS = (0.3, 0.5, 0.7)


@dataclass
class Nuclei:
    """One row per nucleus: ``nucleus`` id (0…), ``phase``, ``variant``, ``n_atoms``, centroid
    ``x, y, z`` (Å), ``max_order`` and ``mean_order`` (of its phase) and ``n_core``."""

    nucleus: np.ndarray
    phase: np.ndarray
    variant: np.ndarray
    n_atoms: np.ndarray
    centroid: np.ndarray
    max_order: np.ndarray
    mean_order: np.ndarray
    n_core: np.ndarray

    def __len__(self) -> int:
        return len(self.nucleus)

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame({"nucleus": self.nucleus, "phase": self.phase, "variant": self.variant,
                             "n_atoms": self.n_atoms, "x": self.centroid[:, 0], "y": self.centroid[:, 1],
                             "z": self.centroid[:, 2], "max_order": self.max_order,
                             "mean_order": self.mean_order, "n_core": self.n_core})


def phase_order(atoms: AtomModel) -> np.ndarray:
    """Each atom's order parameter of its own phase (the larger of L1₀ and L1₂ for A1 atoms)."""
    f = atoms.features
    return np.where(f["phase"] == "L12", f["order_L12"],
                    np.where(f["phase"] == "L10", f["order_L10"], np.maximum(f["order_L10"], f["order_L12"])))


def find_nuclei(atoms: AtomModel, lattice: Lattice, *, min_atoms=DEFAULT_MIN_ATOMS,
                core_order=DEFAULT_CORE_ORDER) -> tuple[AtomModel, Nuclei]:
    """Label the ordered nuclei of an atom model classified by
    :func:`~napari_aet.analysis.order.classify_order`.

    Returns the atoms with columns ``nucleus`` (id, -1 for none), ``nucleus_core`` and
    ``nucleus_boundary`` (bool), and the :class:`Nuclei` table, largest nucleus first.
    """
    if min_atoms < 1:
        raise InputError(f"the smallest nucleus must have at least 1 atom, got {min_atoms}")
    f = atoms.features
    label = np.char.add(f["phase"].astype(str), f["variant"].astype(str))
    neighbours, _ = site_neighbours(atoms, lattice, 0.75 if lattice.kind == "fcc" else 0.9)
    n = len(atoms)
    rows = np.repeat(np.arange(n), neighbours.shape[1] - 1)
    cols = neighbours[:, 1:].ravel()
    valid = cols < n
    rows, cols = rows[valid], cols[valid]
    same = (label[rows] == label[cols]) & (f["phase"][rows] != "A1")
    graph = sparse.coo_matrix((np.ones(same.sum()), (rows[same], cols[same])), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    ordered = f["phase"] != "A1"
    sizes = np.bincount(component, weights=ordered)
    kept = np.flatnonzero(sizes >= min_atoms)
    kept = kept[np.argsort(-sizes[kept], kind="stable")]
    lookup = np.full(len(sizes), -1)
    lookup[kept] = np.arange(len(kept))
    nucleus = np.where(ordered, lookup[component], -1)
    order = phase_order(atoms)
    outside = np.zeros(n, bool)
    np.logical_or.at(outside, rows, nucleus[rows] != nucleus[cols])
    members = nucleus >= 0
    ids = nucleus[members]
    count = np.bincount(ids, minlength=len(kept))
    centroid = np.stack([np.bincount(ids, atoms.positions[members, c], len(kept)) for c in range(3)], 1)
    first = np.full(len(kept), n)
    np.minimum.at(first, ids, np.flatnonzero(members))
    maximum = np.full(len(kept), -np.inf)
    np.maximum.at(maximum, ids, order[members])
    core = members & (order >= core_order)
    table = Nuclei(np.arange(len(kept)), f["phase"][first] if len(kept) else np.zeros(0, object),
                   f["variant"][first] if len(kept) else np.zeros(0, object), count,
                   centroid / np.maximum(count, 1)[:, None], maximum,
                   np.bincount(ids, order[members], len(kept)) / np.maximum(count, 1),
                   np.bincount(nucleus[core], minlength=len(kept)))
    return atoms.with_features(nucleus=nucleus, nucleus_core=core, nucleus_boundary=members & outside), table


def _grid(positions, voxel_size, margin):
    """A cubic grid centred on the origin holding every atom: shape and each atom's flat voxel index."""
    half = int(np.ceil((np.abs(positions).max() + margin) / voxel_size)) if len(positions) else 1
    shape = (2 * half + 1,) * 3
    index = np.rint(positions[:, ::-1] / voxel_size).astype(np.int64) + half
    return shape, np.ravel_multi_index(index.T, shape)


def order_volume(atoms: AtomModel, *, voxel_size=1.0, sigma=1.5, margin=4.0) -> tuple[np.ndarray, float]:
    """The order parameter interpolated into a volume, for iso-surfaces at :data:`ISO_LEVELS`.

    Each atom's order of its phase (:func:`phase_order`) is spread with a Gaussian of ``sigma`` Å
    and divided by the spread atom density (a normalised kernel average); voxels far from any atom
    (density below 20 % of its median inside the particle) are 0.

    Returns the float32 volume ``(nz, ny, nx)``, centred on the origin like every napari-aet volume
    (voxel n // 2 at (0, 0, 0)), and its voxel size (Å).
    """
    shape, flat = _grid(atoms.positions, voxel_size, margin)
    size = int(np.prod(shape))
    density = ndimage.gaussian_filter(np.bincount(flat, minlength=size).reshape(shape).astype(np.float32),
                                      sigma / voxel_size)
    weighted = ndimage.gaussian_filter(np.bincount(flat, phase_order(atoms), size).reshape(shape).astype(np.float32),
                                       sigma / voxel_size)
    inside = density > 0.2 * np.median(density[density > 1e-3 * density.max()])
    volume = np.where(inside, weighted / np.maximum(density, 1e-12), 0).astype(np.float32)
    return volume, float(voxel_size)


def nucleus_volume(atoms: AtomModel, *, voxel_size=1.0, margin=4.0) -> np.ndarray:
    """Nucleus labels on the grid of :func:`order_volume`: ``nucleus + 1`` (0 outside nuclei) at each
    nucleus atom's voxel, grown by one voxel; int32 ``(nz, ny, nx)``."""
    shape, flat = _grid(atoms.positions, voxel_size, margin)
    labels = np.zeros(int(np.prod(shape)), np.int32)
    members = atoms.features["nucleus"] >= 0
    labels[flat[members]] = atoms.features["nucleus"][members] + 1
    return ndimage.grey_dilation(labels.reshape(shape), size=(3, 3, 3))


def nucleus_overlap(found, truth) -> tuple[np.ndarray, int]:
    """How well found nuclei match true ones, both given as per-atom labels (-1 for none).

    Returns the intersection over union (atoms) of each true nucleus with the found nucleus that
    overlaps it most (0 when none does), ordered by true label, and the number of spurious found
    nuclei (overlapping no true nucleus by more than a tenth of their atoms).
    """
    found, truth = np.asarray(found), np.asarray(truth)
    true_ids, found_ids = np.unique(truth[truth >= 0]), np.unique(found[found >= 0])
    both = (truth >= 0) & (found >= 0)
    joint = np.zeros((len(true_ids), len(found_ids)))
    np.add.at(joint, (np.searchsorted(true_ids, truth[both]), np.searchsorted(found_ids, found[both])), 1)
    true_size = np.array([np.count_nonzero(truth == t) for t in true_ids])
    found_size = np.array([np.count_nonzero(found == f) for f in found_ids])
    iou = joint / (true_size[:, None] + found_size[None, :] - joint) if joint.size else joint
    spurious = int(np.count_nonzero(joint.max(axis=0, initial=0) <= 0.1 * found_size)) if len(found_ids) else 0
    return (iou.max(axis=1) if iou.shape[1] else np.zeros(len(true_ids))), spurious
