"""7 Analyse: lattice, chemical order, nuclei, structure and strain of an atoms layer, or only the
structure of an amorphous one (see docs/analysis.md)."""

from __future__ import annotations

import numpy as np
from magicgui.widgets import ComboBox, FloatSpinBox, SpinBox
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from qtpy.QtWidgets import QLabel, QListWidget

from .. import workflow
from ..analysis.analyze import LATTICES
from ..analysis.nuclei import ISO_LEVELS, nucleus_volume
from .layers import atoms_from_layer, atoms_layer, volume_layer
from ..model import Reconstruction
from ._base import StageWidget, is_atoms
from ._plots import PlotCanvas

#: Face colours of the phases (L1₀ by variant).
PHASE_COLOURS = {("A1", ""): "#8c8c8c", ("L10", "x"): "#e6550d", ("L10", "y"): "#31a354", ("L10", "z"): "#3182bd",
                 "L12": "#d62fd6"}
COLOUR_BY = ("phase", "order_L10", "order_L12", "Q4", "Q6")
#: Lattice choices as shown: (label, value).
LATTICE_CHOICES = [("none (amorphous)" if c == "none" else c, c) for c in LATTICES]
ORDER_MAP = "viridis"


def phase_colours(phase, variant) -> np.ndarray:
    """RGBA ``(N, 4)`` of each atom's phase (and L1₀ variant)."""
    from matplotlib.colors import to_rgba

    keys = [("A1", "") if p == "A1" else "L12" if p == "L12" else (p, v) for p, v in zip(phase, variant)]
    return np.array([to_rgba(PHASE_COLOURS.get(k, "#8c8c8c")) for k in keys]).reshape(-1, 4)


class AnalyseWidget(StageWidget):
    """Run the study's analyse stage (:func:`napari_aet.workflow.analyse`, i.e.
    :func:`napari_aet.analysis.analyze.analyze_atoms`) on an atoms layer; the result is kept in the study.

    Adds the Points layer "<atoms> analysis" (every per-atom result as a feature; coloured by phase,
    an order parameter or Q4 / Q6, with a colour bar in the plot), "<atoms> order" (the order
    parameter as a volume drawn as an iso-surface at the chosen level: 0.3, 0.5 or 0.7) and
    "<atoms> nuclei" (a Labels layer). Plots the pair distribution (and the partial ones) and the
    order-parameter histograms (Q4 / Q6 without a lattice); lists the nuclei — clicking one centres
    the camera on it. Lattice "none (amorphous)", or "auto" when no lattice fits, gives only the
    structure; the message says what was skipped and why.
    """

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer, [
            ComboBox(name="lattice", label="lattice", choices=LATTICE_CHOICES, value="auto",
                     tooltip="auto: fcc or bcc, whichever fits, else none; none: an amorphous sample — pair "
                             "distribution, coordination and Q4/Q6 only"),
            FloatSpinBox(name="lattice_constant", label="lattice constant (Å, 0 = from the PDF)", value=0.0,
                         min=0.0, max=20.0, step=0.01),
            SpinBox(name="min_nucleus", label="smallest nucleus (atoms)", value=13, min=1, max=100000),
            ComboBox(name="colour_by", label="colour atoms by", choices=list(COLOUR_BY), value="phase"),
            ComboBox(name="iso_level", label="order iso-surface", choices=list(ISO_LEVELS), value=0.5),
        ], run_text="Analyse")
        self.atoms_input = self.add_input("atoms", is_atoms, field="atoms")
        self.plot = PlotCanvas(height=3.2)
        self.extra.addWidget(self.plot)
        self.extra.addWidget(QLabel("nuclei (click: centre the view)"))
        self.nuclei_list = QListWidget()
        self.nuclei_list.currentRowChanged.connect(self.go_to_nucleus)
        self.extra.addWidget(self.nuclei_list)
        self.parameters.colour_by.changed.connect(self._recolour)
        self.parameters.iso_level.changed.connect(self._set_iso_level)
        self.analysis = None
        self._names = None

    stage = "analyse"

    def prepare(self):
        layer = self.selected(self.atoms_input, "atoms")
        atoms = atoms_from_layer(layer)
        states = workflow.status(self.session.point)  # a layer from elsewhere stands for the latest atoms
        latest = next((stage for stage in ("refine", "classify", "trace") if states[stage] == "done"), "trace")
        self.use_as_study_input(layer, "atoms", latest, atoms)
        meta = layer.metadata["aet"]
        self._names = (layer.name, meta["volume_shape"], meta["voxel_size"])
        params = self.values()
        options = {"lattice": params["lattice"], "lattice_constant": params["lattice_constant"] or None,
                   "min_nucleus": params["min_nucleus"]}
        return lambda progress: self.session.run("analyse", progress=progress, **options)

    def finish(self, analysis):
        self.session.announce(self.stage)
        self.analysis = analysis
        name, shape, voxel = self._names
        self.show_output(atoms_layer(analysis.atoms, shape, voxel, name=f"{name} analysis"))
        if analysis.order_volume is not None:
            order = volume_layer(Reconstruction(analysis.order_volume, analysis.order_voxel_size), f"{name} order")
            meta = {"aet": {"kind": "order_volume", "voxel_size": analysis.order_voxel_size}}
            self.show_output(order, rendering="iso", iso_threshold=float(self.values()["iso_level"]),
                             colormap="magma", contrast_limits=(0.0, 1.0), metadata=meta)
            labels = nucleus_volume(analysis.atoms, voxel_size=analysis.order_voxel_size)
            _, kwargs, _ = order
            self.show_output((labels, {"name": f"{name} nuclei", "scale": kwargs["scale"],
                                       "translate": kwargs["translate"], "opacity": 0.5,
                                       "metadata": {"aet": {"kind": "nuclei"}}}, "labels"))
        if "phase" not in analysis.atoms.features and self.values()["colour_by"] not in analysis.atoms.features:
            self.parameters.colour_by.value = "Q6"  # no order without a lattice (redraws)
        else:
            self._recolour()
        self._list_nuclei()
        note = f" ⚠ {analysis.order_error}" if analysis.order_error else ""
        self.show_done(f"{analysis.describe()}.{note}")

    def _points(self):
        name = f"{self._names[0]} analysis" if self._names else None
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def _recolour(self, _value=None):
        """Colour the analysis points by phase or order parameter and redraw the plots."""
        layer = self._points()
        if layer is None or self.analysis is None:
            return
        f = self.analysis.atoms.features
        by = self.values()["colour_by"]
        if by == "phase" and by in f:
            colours = phase_colours(f["phase"], f["variant"])
        else:  # a column the analysis did not make (order without a lattice) is all 0
            colours = colormaps[ORDER_MAP](np.clip(np.nan_to_num(np.asarray(f.get(by, 0.0), float)), 0, 1))
            colours = np.broadcast_to(colours, (len(self.analysis.atoms), 4))
        layer.face_color = colours
        self.plot_analysis(by)

    def _set_iso_level(self, level):
        name = f"{self._names[0]} order" if self._names else None
        if name in self.viewer.layers:
            self.viewer.layers[name].iso_threshold = float(level)

    def plot_analysis(self, colour_by):
        """Pair distribution (and the partial ones), order-parameter histograms (Q4 / Q6 without a
        lattice), and the colour key."""
        pdf, histogram, key = self.plot.subplots(1, 3)
        structure = self.analysis.structure["pdf"]
        pdf.plot(structure["r_A"], structure["g"], lw=1, color="#d0d0d0", label="all")
        for pair, g in structure.get("partial", {}).items():
            pdf.plot(structure["r_A"], g, lw=0.7, label=pair)
        if "partial" in structure:
            pdf.legend(fontsize=6)
        pdf.set_xlabel("r (Å)")
        pdf.set_ylabel("g(r)")
        f = self.analysis.atoms.features
        lattice = self.analysis.lattice is not None
        columns = (("order_L10", PHASE_COLOURS[("L10", "z")]), ("order_L12", PHASE_COLOURS["L12"])) if lattice \
            else (("Q4", PHASE_COLOURS[("L10", "y")]), ("Q6", PHASE_COLOURS[("L10", "x")]))
        for column, colour in columns:
            values = np.asarray(f[column], float)
            if np.isfinite(values).any():
                histogram.hist(values[np.isfinite(values)], bins=20, range=(0, 1 if lattice else 1.2), alpha=0.7,
                               color=colour, label=column)
        histogram.set_yscale("log" if lattice else "linear")
        histogram.set_xlabel("order parameter" if lattice else "Q4, Q6 (fcc = 1)")
        histogram.legend(fontsize=6)
        if colour_by == "phase" and "phase" in f:
            for i, (k, colour) in enumerate(PHASE_COLOURS.items()):
                label = "L12" if k == "L12" else " ".join(k).strip()
                key.barh(i, 1, color=colour)
                key.text(1.1, i, label, va="center", fontsize=7, color="#d0d0d0")
            key.set_xlim(0, 3)
            key.axis("off")
        else:
            self.plot.figure.colorbar(ScalarMappable(Normalize(0, 1), colormaps[ORDER_MAP]), cax=key, label=colour_by)
        self.plot.draw()

    def _list_nuclei(self):
        self.nuclei_list.clear()
        nuclei = self.analysis.nuclei
        for k in range(len(nuclei)):
            self.nuclei_list.addItem(f"{nuclei.nucleus[k]}: {nuclei.phase[k]} {nuclei.variant[k]}, "
                                     f"{nuclei.n_atoms[k]} atoms, max order {nuclei.max_order[k]:.2f}")

    def go_to_nucleus(self, row):
        """Centre the camera (and the 2D slice) on nucleus ``row``."""
        if self.analysis is None or not 0 <= row < len(self.analysis.nuclei):
            return
        x, y, z = self.analysis.nuclei.centroid[row]
        self.viewer.camera.center = (z, y, x)
        if self.viewer.dims.ndim >= 3:
            self.viewer.dims.set_point(self.viewer.dims.ndim - 3, z)
