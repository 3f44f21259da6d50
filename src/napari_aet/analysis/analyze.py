"""Stage 9 on one atom model: lattice, chemical order, nuclei, general structure and strain.

:func:`analyze_atoms` chains :func:`~.lattice.fit_lattice`, :func:`~.order.classify_order`,
:func:`~.nuclei.find_nuclei`, :func:`~.structure.bond_order` and :func:`~.strain.strain_field`.
When the order analysis cannot run (not two elements, or a bcc lattice) the rest still does and
``order_error`` says why.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..model import AtomModel, InputError
from ..progress import ProgressCallback, report
from .lattice import Lattice, fit_lattice
from .nuclei import DEFAULT_MIN_ATOMS, Nuclei, find_nuclei, order_volume
from .order import DEFAULT_RADIUS, DEFAULT_THRESHOLD, classify_order
from .strain import StrainField, strain_field
from .structure import bond_order, structure_summary

#: Columns the order analysis adds, with their values when it cannot run.
ORDER_COLUMNS = {"phase": "", "variant": "", "order_L10": np.nan, "order_L12": np.nan, "nucleus": -1,
                 "antisite": False}


@dataclass
class Analysis:
    """Everything :func:`analyze_atoms` found.

    atoms : the input atoms with the per-atom columns of every step.
    lattice : the fitted :class:`~.lattice.Lattice`. nuclei : :class:`~.nuclei.Nuclei` (empty
    without order). structure : pair distribution, coordination, Q4/Q6 summary (JSON-ready).
    strain : :class:`~.strain.StrainField`. order_volume : float32 ``(nz, ny, nx)`` order parameter
    (None without order), voxel ``order_voxel_size`` Å, centred on the origin.
    order_error : why the order analysis did not run, or "".
    """

    atoms: AtomModel
    lattice: Lattice
    nuclei: Nuclei
    structure: dict
    strain: StrainField
    order_volume: np.ndarray | None
    order_voxel_size: float
    order_error: str = ""

    def summary(self) -> dict:
        """A small JSON-ready summary: atoms, lattice constant, phase counts, nuclei."""
        phases = self.atoms.features["phase"]
        return {"n_atoms": len(self.atoms), "lattice": self.lattice.kind,
                "lattice_constant_A": self.lattice.constant, "n_grains": len(self.lattice.rotations),
                "phase_counts": {p: int(np.count_nonzero(phases == p)) for p in ("A1", "L10", "L12")},
                "n_nuclei": len(self.nuclei), "order_error": self.order_error}


def _no_nuclei() -> Nuclei:
    empty = np.zeros(0)
    return Nuclei(empty.astype(int), empty.astype(object), empty.astype(object), empty.astype(int),
                  np.zeros((0, 3)), empty, empty, empty.astype(int))


def analyze_atoms(atoms: AtomModel, *, lattice="fcc", lattice_constant=None, min_nucleus=DEFAULT_MIN_ATOMS,
                  radius=DEFAULT_RADIUS, threshold=DEFAULT_THRESHOLD,
                  strain_fwhm=10.0, seed=0, progress: ProgressCallback = None) -> Analysis:
    """Analyse one atom model (positions x, y, z in Å; two elements for the order analysis).

    lattice : "fcc" or "bcc". lattice_constant : Å, None to take it from the pair distribution.
    min_nucleus : fewest atoms of a nucleus. radius, threshold : of
    :func:`~.order.classify_order`. strain_fwhm : strain smoothing kernel (Å). seed : lattice fit.
    """
    report(progress, 0.0, "fitting the lattice…")
    fitted, fit = fit_lattice(atoms, kind=lattice, lattice_constant=lattice_constant, seed=seed)
    report(progress, 0.3, "chemical order…")
    order_error = ""
    nuclei, volume = _no_nuclei(), None
    try:
        ordered = classify_order(fitted, fit, radius=radius, threshold=threshold)
        fitted, nuclei = find_nuclei(ordered, fit, min_atoms=min_nucleus)
        volume, _ = order_volume(fitted)
    except InputError as error:
        order_error = str(error)
        fitted = fitted.with_features(**{k: np.full(len(fitted), v, dtype=object if v == "" else None)
                                         for k, v in ORDER_COLUMNS.items()})
    report(progress, 0.6, "bond-orientational order…")
    fitted = bond_order(fitted, cutoff=1.2 * fit.r1)
    structure = structure_summary(fitted)
    report(progress, 0.8, "strain…")
    strain = strain_field(fitted, fwhm=strain_fwhm)
    report(progress, 1.0, "analysis done")
    return Analysis(fitted, fit, nuclei, structure, strain, volume, 1.0, order_error)
