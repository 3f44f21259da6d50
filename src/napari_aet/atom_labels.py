"""What each atom of a model is called: its element, or "non-atom".

An :class:`~napari_aet.model.AtomModel` stores a point that is not an atom as species "" with the
boolean feature ``non_atom`` True (the convention of :func:`napari_aet.classify.classify_atoms`);
editing and review show and set labels instead: an element symbol or :data:`NON_ATOM`.
"""

from __future__ import annotations

import numpy as np

from .model import ATOMIC_NUMBERS, AtomModel

#: The label of a point that is "not an atom" (stored as species "" with ``non_atom=True``,
#: the convention of classify_atoms).
NON_ATOM = "non-atom"


def flag(atoms: AtomModel, name) -> np.ndarray:
    """A copy of boolean feature ``name`` (all False where absent)."""
    return np.array(atoms.features.get(name, np.zeros(len(atoms), bool)), dtype=bool)


def labels(atoms: AtomModel) -> np.ndarray:
    """Per-atom labels: the species, or :data:`NON_ATOM` where ``non_atom`` is True."""
    return np.where(flag(atoms, "non_atom"), NON_ATOM, atoms.species.astype(str)).astype(object)


def model_elements(atoms: AtomModel) -> tuple[str, ...]:
    """The element symbols present in the model, lightest first ("" excluded)."""
    return tuple(sorted(set(atoms.species.tolist()) - {""}, key=ATOMIC_NUMBERS.__getitem__))
