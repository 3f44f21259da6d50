"""Refine an atoms layer against a tilt series -> "<atoms> refined", model and residual projections."""

from __future__ import annotations

import inspect

import numpy as np
from magicgui.widgets import CheckBox, FloatSpinBox, SpinBox

from ..atom_labels import model_elements
from .layers import (ELEMENT_COLOURS, atoms_from_layer, atoms_layer, label_colours, tilt_series_from_layer,
                      tilt_series_layer)
from ..precision import describe_precision
from ..geometry import euler_angles
from ..refine import check_inputs, describe_moves_kept, refine_atoms, worst_projections
from ..workflow import refine as refine_stage
from ..workflow import refined_series
from ._base import StageWidget, is_atoms, is_tilt_series
from ._plots import PlotCanvas


class RefineWidget(StageWidget):
    """Refine positions and per-species height and width against the measured projections
    (:func:`napari_aet.refine.refine_atoms`).

    Reads an (aligned) tilt series and a classified atoms layer; never changes them. Adds the
    Points layer "<atoms> refined" (features ``refine_shift`` in Å, ``height_ratio``, the
    ``refine_added`` / ``refine_removed`` flags of atoms the residual showed missing or
    spurious — removed ones stay as hidden non-atoms — and, with the half-set precision on,
    each atom's ``half_set_error`` in Å), the
    model's simulated projections "<atoms> model projections" and the residual "<atoms> residual"
    (measured − model: missing atoms show as bright spots, spurious ones as dark). The plot shows
    the R-factor per iteration and each species' ``height_ratio`` histogram: atoms far from 1
    are candidates for another species, or for deletion; with the precision estimate, also each
    species' ``half_set_error`` histogram with its RMS (pm).
    """

    def __init__(self, napari_viewer):
        default = {name: p.default for name, p in inspect.signature(refine_atoms).parameters.items()}
        super().__init__(napari_viewer, [
            SpinBox(name="iterations", label="iterations", value=default["iterations"], min=0, max=500),
            SpinBox(name="width_every", label="fit widths every (0 = never)", value=default["width_every"],
                    min=0, max=100),
            FloatSpinBox(name="min_distance", label="min distance (Å, 0 = as traced)", value=0.0, min=0.0,
                         max=10.0, step=0.1),
            CheckBox(name="validate_moves", label="keep only moves held-out projections support",
                     value=default["validate_moves"]),
            CheckBox(name="precision", label="estimate precision from half sets (2 more refinements)",
                     value=inspect.signature(refine_stage).parameters["precision"].default),
        ], run_text="Refine atoms")
        self.series_input = self.add_input("tilt series", is_tilt_series, field="aligned")
        self.atoms_input = self.add_input("atoms", is_atoms, field="atoms")
        self.plot = PlotCanvas(height=3.0)
        self.extra.addWidget(self.plot)
        self._target = None

    stage = "refine"

    def prepare(self):
        series_layer = self.selected(self.series_input, "tilt series")
        series = tilt_series_from_layer(series_layer)
        layer = self.selected(self.atoms_input, "atoms")
        atoms = atoms_from_layer(layer)
        check_inputs(series, atoms)
        point = self.session.point
        if not (point.aligned is None and self.is_study_input(series_layer, "raw")):
            self.use_as_study_input(series_layer, "aligned", "align", series)
        self.use_as_study_input(layer, "atoms", "classify", atoms)
        self._target = (layer.name, dict(layer.metadata["aet"]))
        params = self.values()
        params["min_distance"] = params["min_distance"] or None  # the tracing's, else the physical table

        def job(progress):
            refinement = self.session.run("refine", progress=progress, **params)
            series = refined_series(point)  # with the background the refinement removed
            return refinement, series, refinement.model_projections(series)

        return job

    def finish(self, result):
        refinement, series, model = result
        name, meta = self._target
        refined = self.show_study_output(atoms_layer(refinement.atoms, meta["volume_shape"], meta["voxel_size"],
                                                     name=f"{name} refined"), "atoms")
        self.session.announce(self.stage)
        for suffix, data in (("model projections", model), ("residual", series.projections - model)):
            self.show_output(tilt_series_layer(series.replace(projections=data), name=f"{name} {suffix}"),
                             visible=False)
        self.viewer.layers.selection.active = refined  # not the hidden residual added last
        self.plot_refinement(refinement)
        species = ", ".join(f"{e} height {h:.4g}, width {refinement.widths[e]:.2f} Å"
                            for e, h in refinement.heights.items())
        f = refinement.atoms.features
        moved = f["refine_shift"][np.isfinite(f["refine_shift"]) & (refinement.atoms.species != "")]
        kept = describe_moves_kept(refinement.errors["moves_kept"])
        removed = int(np.count_nonzero(f["refine_removed"]))
        misfit = np.asarray(refinement.errors["projection_misfit"])
        tilts, file_indices = euler_angles(series.angles)[:, 1], series.file_indices()
        worst = ", ".join(f"{file_indices[i]} ({tilts[i]:+.1f}°, {misfit[i]:.1f}× the median residual)"
                          for i in worst_projections(misfit))  # numbered as the Data step's field counts
        self.show_done(f"R-factor of the atom model against the projections (not the reconstruction's) "
                       f"{refinement.errors['r_factor'][0]:.3f} → {refinement.errors['r_factor'][-1]:.3f}; "
                       f"{species}; {np.count_nonzero(f['refine_added'])} atoms added, "
                       f"{removed} removed{' (kept as hidden non-atoms)' if removed else ''}; the others moved "
                       f"{np.median(moved):.2f} Å (median), {moved.max():.2f} Å (max)"
                       + (f"; {kept}" if kept else "")
                       + (f"; projections fitting worst: {worst} (a bad image, or where the model is poorest)"
                          if worst else "")
                       + (f"; precision (half sets, noise only) {describe_precision(refinement.precision)}"
                          if refinement.precision else ""))

    def plot_refinement(self, refinement):
        """R-factor per iteration, the height ratio of each species' atoms and, when it was
        estimated, each species' half-set position error."""
        curve, ratios, *spread = self.plot.subplots(1, 3 if refinement.precision else 2)
        *passes, final = refinement.errors["r_factor"]  # every pass's iterations, then the final model's
        curve.plot(passes, color=ELEMENT_COLOURS["Pt"], lw=1.5)
        curve.plot([len(passes)], [final], "o", color="white", ms=4,
                   label="final (moves kept)" if refinement.errors.get("moves_kept") else "final")
        curve.legend(fontsize=6)
        curve.set_xlabel("iteration (all passes)")
        curve.set_ylabel("R-factor")
        atoms = refinement.atoms
        colours = label_colours({*model_elements(atoms), *refinement.heights})  # as the layer's atoms
        ratio = atoms.features["height_ratio"]
        top = max(2.5, float(np.nanmax(ratio, initial=0.0)) * 1.05)  # a Pt atom labelled Fe sits near 6.5
        for element in refinement.heights:
            values = ratio[atoms.species == element]
            ratios.hist(values, bins=60, range=(0.0, top), alpha=0.7, label=element,
                        color=colours[element])
        ratios.set_yscale("log")  # single outlying atoms stay visible beside the main peak
        ratios.axvline(1.0, color="white", lw=1, ls="--")
        ratios.set_xlabel("height / species height")
        ratios.set_ylabel("atoms")
        ratios.legend(fontsize=7)
        if spread:
            self.plot_precision(spread[0], refinement, colours)
        self.plot.draw()

    @staticmethod
    def plot_precision(axes, refinement, colours):
        """Histogram of each species' atoms' ``half_set_error`` (pm), its RMS dashed, in ``colours``
        (by element)."""
        atoms = refinement.atoms
        error = 100 * atoms.features["half_set_error"]
        top = float(np.nanpercentile(error, 99.5)) * 1.1
        for element, estimate in refinement.precision.items():
            colour = colours[element]
            axes.hist(error[atoms.species == element], bins=40, range=(0.0, top), alpha=0.7, color=colour,
                      label=f"{element} {estimate['3d']:.0f} pm")
            axes.axvline(estimate["3d"], color=colour, lw=1, ls="--")
        axes.set_xlabel("half-set error (pm)")
        axes.set_ylabel("atoms")
        axes.legend(fontsize=7)
