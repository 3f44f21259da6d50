"""8 Time series: register several time points of one particle and follow its sites and nuclei."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from magicgui.widgets import FloatSpinBox
from matplotlib import colormaps
from qtpy.QtWidgets import QFileDialog, QHBoxLayout, QListWidget, QPushButton

from ..analysis.analyze import analyze_atoms
from ..analysis.outputs import load_analysis_inputs
from ..analysis.timeseries import atoms_nucleus_tracks, follow_particle
from .layers import ATOM_DIAMETER
from ..model import InputError, real_atoms
from ..progress import sub_progress
from ._base import VISIBLE_BEFORE, StageWidget, study_tag
from ._plots import PlotCanvas

#: Colour of atoms outside nuclei (RGBA).
MATRIX_COLOUR = (0.55, 0.55, 0.55, 0.25)


def track_colours(nucleus_track) -> np.ndarray:
    """RGBA ``(N, 4)``: a tab10 colour per nucleus track, faint grey outside nuclei."""
    colours = colormaps["tab10"](np.mod(np.maximum(nucleus_track, 0), 10))
    colours[np.asarray(nucleus_track) < 0] = MATRIX_COLOUR
    return colours


def time_label(source: str) -> str:
    """A time point's label for the plot: the study's time point name ("study: 30" → "30"), or the
    run directory's name (an ``analysis`` folder: its parent's, e.g. ``p1/30/analysis`` → "30")."""
    if source.startswith("study: "):
        return source.removeprefix("study: ")
    path = Path(source)
    return path.parent.name if path.name == "analysis" else path.stem


class TimeSeriesWidget(StageWidget):
    """Register time points onto the first and track them
    (:func:`napari_aet.analysis.timeseries.follow_particle`).

    Sources: ``analyze`` output or run directories (Add directory…), or the study's time points that
    have atoms (Use study time points); unanalysed ones are analysed first. Adds the 4D Points layer
    "time series" ((time, z, y, x), Å, in time 0's frame; a time slider) with features ``time``,
    ``track``, ``nucleus``, ``nucleus_track``, coloured by nucleus track, and plots each nucleus
    track's size against time.
    """

    per_time_point = False  # the time series spans them all

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer, [
            FloatSpinBox(name="change", label="grew / shrank beyond (fraction)", value=0.1, min=0.0, max=1.0,
                         step=0.01),
        ], run_text="Register and track")
        self.sources = QListWidget()
        buttons = QHBoxLayout()
        for text, slot in (("Add directory…", self.add_directory), ("Use study time points", self.use_study),
                           ("Clear", self.sources.clear)):
            button = QPushButton(text)
            button.clicked.connect(slot)
            buttons.addWidget(button)
        self.inputs.addRow("time points (in order)", self.sources)
        self.inputs.addRow(buttons)
        self.plot = PlotCanvas(height=2.6)
        self.extra.addWidget(self.plot)
        self.followed = None

    def add_directory(self, _checked=False, path=None):
        """Append an ``analyze`` output or run directory (asks for one when ``path`` is None)."""
        path = path or QFileDialog.getExistingDirectory(self, "analyze output or run directory")
        if path:
            self.sources.addItem(str(path))

    def use_study(self, _checked=False):
        """List the study's time points that have atoms."""
        self.sources.clear()
        for point in self.session.study.time_points:
            if point.atoms is not None:
                self.sources.addItem(f"study: {point.name}")

    def _source_list(self):
        return [self.sources.item(i).text() for i in range(self.sources.count())]

    def prepare(self):
        sources = self._source_list()
        if len(sources) < 2:
            raise InputError(f"tracking needs at least two time points, got {len(sources)}: add analyze "
                             "outputs or run directories, or use the study's time points")
        points = {f"study: {p.name}": p for p in self.session.study.time_points}
        change = self.values()["change"]

        def job(progress):
            loaded = []
            for t, source in enumerate(sources):
                step = sub_progress(progress, 0.6 * t / len(sources), 0.6 * (t + 1) / len(sources))
                if source in points:
                    analysis = analyze_atoms(real_atoms(points[source].atoms), progress=step)  # as Analyse
                    loaded.append((analysis.atoms, analysis.lattice))
                else:
                    step(0.0, f"reading {source}…")
                    loaded.append(load_analysis_inputs(source))
            times = [atoms for atoms, _ in loaded]
            followed = follow_particle(times, [lattice for _, lattice in loaded], change=change,
                                       progress=sub_progress(progress, 0.6, 1.0))
            return times, followed

        return job

    def finish(self, result):
        times, followed = result
        self.followed = followed
        self.time_labels = [time_label(source) for source in self._source_list()]
        nucleus_tracks = atoms_nucleus_tracks(followed, times)
        data = np.vstack([np.column_stack([np.full(len(p), t), p[:, ::-1]]) for t, p in enumerate(followed.positions)])
        features = {"time": np.concatenate([np.full(len(a), t) for t, a in enumerate(times)]),
                    "track": np.concatenate(followed.sites.track),
                    "nucleus": np.concatenate([a.features["nucleus"] for a in times]),
                    "nucleus_track": np.concatenate(nucleus_tracks),
                    "element": np.concatenate([a.species for a in times]).astype(str)}
        self.show_output((data, {"name": "time series", "features": features, "size": ATOM_DIAMETER,
                                 "face_color": track_colours(features["nucleus_track"]), "border_width": 0,
                                 "metadata": {"aet": {"kind": "time_series"}}}, "points"))
        hidden = [layer for layer in self.viewer.layers if layer.visible and study_tag(layer)[1] is not None
                  and study_tag(layer)[0] == self.session.id]
        for layer in hidden:  # each time point's layers lie in its own frame, not time 0's
            layer.metadata["aet"][VISIBLE_BEFORE] = True  # shown again with their time point
            layer.visible = False
        self.viewer.dims.set_point(0, 0)
        self.plot_sizes()
        residuals = ", ".join(f"{t.residual:.2f}" for t in followed.transforms[1:])
        events = followed.nuclei.event
        counts = ", ".join(f"{np.count_nonzero(events == e)} {e}" for e in dict.fromkeys(events) if e != "present")
        self.show_done(f"{len(times)} times registered onto the first (residuals {residuals} Å); "
                       f"nucleus events: {counts or 'none'}"
                       + (f"; the time points' own layers are hidden ({len(hidden)}: each in its own frame)"
                          if hidden else ""))

    def plot_sizes(self):
        """Atoms per nucleus track against time."""
        (ax,) = self.plot.subplots(1, 1)
        table = self.followed.nuclei.to_frame()
        for track, rows in table.groupby("nucleus_track"):
            ax.plot(rows["time"], rows["n_atoms"], "o-", color=colormaps["tab10"](track % 10), label=str(track))
        ax.set_xticks(range(len(self.time_labels)), self.time_labels)
        ax.set_xlabel("time point")
        ax.set_ylabel("atoms in nucleus")
        if len(table):
            ax.legend(fontsize=6, title="track", title_fontsize=6)
        self.plot.draw()
