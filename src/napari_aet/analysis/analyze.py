"""Stage 9 on one atom model: lattice, chemical order, nuclei, general structure and strain.

:func:`analyze_atoms` chains :func:`~.lattice.fit_lattice`, :func:`~.order.classify_order`,
:func:`~.nuclei.find_nuclei`, :func:`~.structure.analyse_structure` and :func:`~.strain.strain_field`.
Without a lattice (``lattice="none"``, an amorphous sample, or ``"auto"`` when neither fcc nor bcc
fits) only the general structure runs — pair distribution, coordination, Q4/Q6 — and
``Analysis.skipped`` says why the rest did not. When the order analysis cannot run on a lattice
(not two elements, or a bcc lattice) the rest still does and ``order_error`` says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..model import AtomModel, InputError
from ..progress import ProgressCallback, report
from .lattice import KINDS, MIN_ALIGNED, Lattice, LatticeMisfit, fit_lattice
from .nuclei import DEFAULT_MIN_ATOMS, Nuclei, find_nuclei, order_volume
from .order import DEFAULT_RADIUS, DEFAULT_THRESHOLD, classify_order
from .strain import StrainField, strain_field
from .structure import analyse_structure

#: Lattice choices: "auto" (the lattice that fits, else none), a lattice kind, or "none" (amorphous).
LATTICES = ("auto", *KINDS, "none")
#: Columns the order analysis adds, with their values when it cannot run.
ORDER_COLUMNS = {"phase": "", "variant": "", "order_L10": np.nan, "order_L12": np.nan, "nucleus": -1,
                 "antisite": False}
#: The analyses, in the order they run; those needing a lattice first.
ANALYSES = ("lattice fit", "chemical order", "nuclei", "strain", "pair distribution", "coordination", "Q4/Q6")
NEEDS_LATTICE = ANALYSES[:4]


@dataclass
class Analysis:
    """Everything :func:`analyze_atoms` found.

    atoms : the input atoms with the per-atom columns of every step that ran.
    lattice : the fitted :class:`~.lattice.Lattice`, None without a lattice (amorphous).
    nuclei : :class:`~.nuclei.Nuclei` (empty without order). structure : pair distribution,
    coordination, Q4/Q6 summary (JSON-ready). strain : :class:`~.strain.StrainField` (None without a
    lattice). order_volume : float32 ``(nz, ny, nx)`` order parameter (None without order), voxel
    ``order_voxel_size`` Å, centred on the origin.
    skipped : analysis (of :data:`ANALYSES`) → why it did not run. lattice_choice : how the lattice
    was chosen ("" when given).
    """

    atoms: AtomModel
    lattice: Lattice | None
    nuclei: Nuclei
    structure: dict
    strain: StrainField | None
    order_volume: np.ndarray | None
    order_voxel_size: float
    skipped: dict = field(default_factory=dict)
    lattice_choice: str = ""

    @property
    def order_error(self) -> str:
        """Why the order analysis could not run on the fitted lattice, or "" (skipped without a lattice is no error)."""
        return self.skipped.get("chemical order", "") if self.lattice is not None else ""

    def summary(self) -> dict:
        """A small JSON-ready summary: atoms, lattice, phase counts, nuclei, which analyses ran and
        which were skipped (and why)."""
        f, fit = self.atoms.features, self.lattice
        return {"n_atoms": len(self.atoms), "lattice": fit.kind if fit else "none",
                "lattice_choice": self.lattice_choice, "lattice_constant_A": fit.constant if fit else None,
                "n_grains": len(fit.rotations) if fit else 0,
                "phase_counts": {p: int(np.count_nonzero(f["phase"] == p)) for p in ("A1", "L10", "L12")}
                if "phase" in f else {},
                "n_nuclei": len(self.nuclei), "order_error": self.order_error,
                "ran": [a for a in ANALYSES if a not in self.skipped], "skipped": dict(self.skipped)}

    def describe(self) -> str:
        """One line for a person: what was found, and what was skipped and why."""
        s = self.summary()
        choice = f"{self.lattice_choice}; " if self.lattice_choice else ""
        if self.lattice is None:
            return (f"{choice}no lattice (amorphous): g(r) first peak {self.structure['first_peak_A']:.2f} Å, "
                    f"mean coordination {self.structure['coordination']['mean']:.1f} (within "
                    f"{self.structure['neighbour_cutoff_A']:.2f} Å), mean Q4 {self.structure['Q4']['mean']:.2f}, "
                    f"Q6 {self.structure['Q6']['mean']:.2f} (fcc = 1); skipped: {', '.join(NEEDS_LATTICE)} "
                    "(they need a lattice)")
        phases = ", ".join(f"{n} {p}" for p, n in s["phase_counts"].items())
        return (f"{choice}{s['lattice']} lattice, a = {s['lattice_constant_A']:.3f} Å, {s['n_grains']} grain(s); "
                f"{phases}; {s['n_nuclei']} nuclei")


def _no_nuclei() -> Nuclei:
    empty = np.zeros(0)
    return Nuclei(empty.astype(int), empty.astype(object), empty.astype(object), empty.astype(int),
                  np.zeros((0, 3)), empty, empty, empty.astype(int))


def choose_lattice(atoms: AtomModel, lattice="auto", *, lattice_constant=None,
                   seed=0) -> tuple[AtomModel, Lattice | None, str]:
    """The fitted atoms, the lattice (None: amorphous) and how it was chosen ("" when given).

    lattice : "fcc" or "bcc" (a misfit is an error), "none", or "auto": fcc and bcc are both fitted
    and the one aligning more bonds is kept; when neither aligns half of them the atoms are taken
    as amorphous. lattice_constant : Å, None to take it from the pair distribution.
    """
    if lattice not in LATTICES:
        raise InputError(f"lattice must be one of {', '.join(LATTICES)}, got {lattice!r}")
    if lattice == "none":
        return atoms, None, ""
    if lattice != "auto":
        return (*fit_lattice(atoms, kind=lattice, lattice_constant=lattice_constant, seed=seed), "")
    fits, shares = [], {}
    for kind in KINDS:
        try:
            fits.append(fit_lattice(atoms, kind=kind, lattice_constant=lattice_constant, seed=seed))
            shares[kind] = fits[-1][1].aligned_fraction
        except LatticeMisfit as misfit:
            shares[kind] = misfit.fraction
    aligned = ", ".join(f"{kind} {share:.0%}" for kind, share in shares.items())
    if not fits:
        return atoms, None, (f"lattice auto: no lattice fits (bonds aligned: {aligned}; {MIN_ALIGNED:.0%} "
                             "needed), analysed as amorphous")
    fitted, fit = max(fits, key=lambda pair: pair[1].aligned_fraction)
    return fitted, fit, f"lattice auto: {fit.kind} (bonds aligned: {aligned})"


def analyze_atoms(atoms: AtomModel, *, lattice="auto", lattice_constant=None, min_nucleus=DEFAULT_MIN_ATOMS,
                  radius=DEFAULT_RADIUS, threshold=DEFAULT_THRESHOLD,
                  strain_fwhm=10.0, seed=0, progress: ProgressCallback = None) -> Analysis:
    """Analyse one atom model (positions x, y, z in Å; two elements for the order analysis).

    lattice : "auto", "fcc", "bcc" or "none" (amorphous; :func:`choose_lattice`).
    lattice_constant : Å, None to take it from the pair distribution.
    min_nucleus : fewest atoms of a nucleus. radius, threshold : of
    :func:`~.order.classify_order`. strain_fwhm : strain smoothing kernel (Å). seed : lattice fit.
    """
    report(progress, 0.0, "fitting the lattice…" if lattice != "none" else "no lattice (amorphous)…")
    fitted, fit, choice = choose_lattice(atoms, lattice, lattice_constant=lattice_constant, seed=seed)
    nuclei, volume, strain = _no_nuclei(), None, None
    if fit is None:
        why = "no lattice chosen (amorphous)" if lattice == "none" else "no lattice fits (amorphous)"
        skipped = {name: why if name == "lattice fit" else f"needs a lattice: {why}" for name in NEEDS_LATTICE}
    else:
        skipped = {}
        report(progress, 0.3, "chemical order…")
        try:
            ordered = classify_order(fitted, fit, radius=radius, threshold=threshold)
            fitted, nuclei = find_nuclei(ordered, fit, min_atoms=min_nucleus)
            volume, _ = order_volume(fitted)
        except InputError as error:
            skipped = {"chemical order": str(error), "nuclei": "needs the chemical order"}
            fitted = fitted.with_features(**{k: np.full(len(fitted), v, dtype=object if v == "" else None)
                                             for k, v in ORDER_COLUMNS.items()})
    report(progress, 0.6, "pair distribution and bond-orientational order…")
    fitted, structure = analyse_structure(fitted, cutoff=1.2 * fit.r1 if fit else None)
    if fit is not None:
        report(progress, 0.8, "strain…")
        strain = strain_field(fitted, fwhm=strain_fwhm)
    report(progress, 1.0, "analysis done")
    return Analysis(fitted, fit, nuclei, structure, strain, volume, 1.0, skipped, choice)
