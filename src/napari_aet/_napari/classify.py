"""Classify the species of the atoms in a Points layer, with a histogram of their intensities."""

from __future__ import annotations

import inspect
from itertools import pairwise

import numpy as np
from magicgui.widgets import FloatSpinBox, LineEdit, SpinBox
from qtpy.QtWidgets import QCheckBox

from ..classify import classify_atoms
from ..atom_labels import NON_ATOM, model_elements
from .layers import atoms_from_layer, atoms_layer, label_colours, reconstruction_from_layer, restyle_atoms
from ..model import InputError, check_elements
from ._base import StageWidget, is_atoms, is_volume
from ._plots import PlotCanvas


def class_boundaries(intensity, class_index) -> list[tuple[int, int, float]]:
    """Intensity thresholds between classes adjacent in median intensity.

    For each pair (lower, upper) the threshold is the value that misassigns the fewest of
    their atoms if intensity alone decided. Returns (lower, upper, threshold) triples.
    """
    intensity, class_index = np.asarray(intensity, float), np.asarray(class_index)
    classes = sorted(np.unique(class_index), key=lambda c: np.median(intensity[class_index == c]))
    bounds = []
    for lower, upper in pairwise(classes):
        pair = np.isin(class_index, (lower, upper))
        values, is_upper = intensity[pair], class_index[pair] == upper
        order = np.argsort(values)
        values, is_upper = values[order], is_upper[order]
        # misassigned if the threshold falls after position k: uppers below + lowers above
        errors = np.concatenate([[0], np.cumsum(is_upper)]) + np.concatenate(
            [np.cumsum((~is_upper)[::-1])[::-1], [0]])
        k = int(np.argmin(errors))
        threshold = values[0] if k == 0 else values[-1] if k == len(values) else 0.5 * (values[k - 1] + values[k])
        bounds.append((int(lower), int(upper), float(threshold)))
    return bounds


class ClassifyWidget(StageWidget):
    """Species of traced atoms (:func:`napari_aet.classify.classify_atoms`).

    Updates the atoms layer in place: species (``element``), per-atom ``intensity``,
    ``confidence``, ``ambiguous``, ``non_atom`` and the point colours. Atoms whose ``locked``
    feature is True keep their species. The plot is a histogram of the integrated intensities
    coloured by class, with the intensity thresholds between neighbouring classes. Points
    classified as non-atoms are hidden (not deleted) unless "show non-atoms" is ticked.
    """

    def __init__(self, napari_viewer):
        default = {name: p.default for name, p in inspect.signature(classify_atoms).parameters.items()}
        super().__init__(napari_viewer, [
            LineEdit(name="elements", label="elements", value=""),
            SpinBox(name="box", label="box (voxels)", value=default["box"], min=1, max=21, step=2),
            FloatSpinBox(name="local_radius", label="local radius (Å, 0 = global)", value=default["local_radius"],
                         min=0.0, max=100.0, step=1.0),
            FloatSpinBox(name="ambiguity_threshold", label="ambiguous below confidence",
                         value=default["ambiguity_threshold"], min=0.0, max=1.0, step=0.05),
        ], run_text="Classify")
        self.volume_input = self.add_input("volume", is_volume, field="reconstruction")
        self.atoms_input = self.add_input("atoms", is_atoms, field="atoms")
        self.show_non_atoms = QCheckBox("show non-atoms (noise peaks)")
        self.show_non_atoms.toggled.connect(lambda: self.apply_non_atom_visibility(self.atoms_input.layer()))
        self.extra.addWidget(self.show_non_atoms)
        self.plot = PlotCanvas()
        self.extra.addWidget(self.plot)
        self._target = None
        self.session.changed.connect(self._elements_from_study)
        self._elements_from_study()

    def _elements_from_study(self, _what=None):
        """Show the study's elements (entered in the Data step), when it has them."""
        elements = self.session.point.parameters.get("elements")
        if elements:
            self.parameters.elements.value = ",".join(elements)

    def apply_non_atom_visibility(self, layer):
        """Hide the points classified as non-atoms, in 2D and 3D, unless "show non-atoms" is ticked
        (data kept; see :func:`napari_aet._napari.layers.atom_style`)."""
        if layer is not None:
            layer.metadata["aet"]["show_non_atoms"] = self.show_non_atoms.isChecked()
            restyle_atoms(layer)

    stage = "classify"

    def prepare(self):
        volume = self.selected(self.volume_input, "volume")
        layer = self.selected(self.atoms_input, "atoms")
        atoms = atoms_from_layer(layer)
        params = self.values()
        if not params["elements"].strip():
            raise InputError("the elements are unknown: enter them here or in the Data step (e.g. Fe,Pt)")
        elements = check_elements(params.pop("elements"))
        self.use_as_study_input(volume, "reconstruction", "reconstruct", reconstruction_from_layer(volume))
        self.use_as_study_input(layer, "atoms", "trace", atoms)
        self._target = (layer, len(atoms), elements)
        return lambda progress: self.session.run("classify", elements, progress=progress, **params)

    def finish(self, atoms):
        layer, n_atoms, elements = self._target
        if layer not in self.viewer.layers or len(layer.data) != n_atoms:
            raise InputError(f"the atoms layer {layer.name!r} changed while classifying: run Classify again")
        meta = layer.metadata["aet"]
        updated = self.show_study_output(atoms_layer(atoms, meta["volume_shape"], meta["voxel_size"], name=layer.name),
                                         "atoms")
        self.apply_non_atom_visibility(updated)
        self.session.announce(self.stage)
        self.plot_histogram(atoms, elements)
        counts = ", ".join(f"{np.count_nonzero(atoms.species == e)} {e}" for e in elements)
        warnings = "".join(f"\n⚠ {w}" for w in self.session.point.report.get("classify_warnings", []))
        between = "an atom and a noise peak" if len(elements) == 1 else "two labels"
        self.show_done(f"{counts}, {np.count_nonzero(atoms.features['non_atom'])} non-atoms; "
                       f"{np.count_nonzero(atoms.features['ambiguous'])} ambiguous (between {between}: "
                       f"6 Edit's review queue shows them, least sure first){warnings}")

    def plot_histogram(self, atoms, elements):
        """Stacked histogram of the integrated intensity of ``atoms`` classified into ``elements``
        by class, in the atoms' colours, with the class boundaries."""
        (ax,) = self.plot.subplots()
        intensity, class_index = atoms.features["intensity"], atoms.features["class_index"]
        names = [NON_ATOM, *elements]
        classes = [c for c in range(len(names)) if np.any(class_index == c)]
        colours = label_colours(model_elements(atoms))
        bins = np.histogram_bin_edges(intensity, bins=min(60, max(10, len(intensity) // 10)))
        ax.hist([intensity[class_index == c] for c in classes], bins=bins, stacked=True,
                color=[colours[names[c]] for c in classes], label=[names[c] for c in classes])
        for _, _, threshold in class_boundaries(intensity, class_index):
            ax.axvline(threshold, color="white", lw=1, ls="--")
        ax.set_xlabel("integrated intensity")
        ax.set_ylabel("atoms")
        ax.legend(fontsize=7)
        self.plot.draw()
