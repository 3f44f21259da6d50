"""7 Analyse and 8 Time series under Xvfb: run through the widgets on the simulator's annealing series."""

from __future__ import annotations

import numpy as np
import pytest

import napari_aet.analysis.analyze as analyze_module
from napari_aet._napari import analyse as analyse_module
from napari_aet._napari import screenshot
from napari_aet._napari._base import show_layer
from napari_aet._napari.analyse import AnalyseWidget
from napari_aet._napari.timeseries import TimeSeriesWidget
from napari_aet.analysis.outputs import analyze_to_directory
from napari_aet.io import write_atoms
from napari_aet._napari.layers import atoms_layer
from napari_aet.simulate import amorphous_slab
from napari_aet.simulate_alloy import annealing_series

WAIT_MS = 60_000
VOXEL = 0.5


@pytest.fixture(scope="module")
def times():
    return annealing_series(radius=18.0, n_times=2, seed=0)


def run_and_wait(qtbot, widget):
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    return widget.last_outcome


def changed_fraction(image, background):
    return np.mean(np.any(image[..., :3] != background[..., :3], axis=-1))


def test_analyse_widget_layers_plots_nuclei_and_rendering(make_napari_viewer, qtbot, times):
    viewer = make_napari_viewer()
    show_layer(viewer, atoms_layer(times[0], (96, 96, 96), VOXEL, name="atoms"))
    widget = AnalyseWidget(viewer)
    qtbot.addWidget(widget)
    assert run_and_wait(qtbot, widget) == "done", widget.message.text()
    points = viewer.layers["atoms analysis"]
    assert not viewer.layers["atoms"].visible and points.visible  # one atom set shows at a time
    assert {"phase", "variant", "order_L10", "order_L12", "nucleus", "antisite"} <= set(points.features.columns)
    assert {"A1", "L10", "L12"} == set(points.features["phase"])
    ordered = points.features["phase"].to_numpy() != "A1"
    assert not np.allclose(points.face_color[ordered][0], points.face_color[~ordered][0])
    assert viewer.layers["atoms nuclei"].data.max() == widget.nuclei_list.count() >= 3
    assert viewer.layers["atoms order"].rendering == "iso" and widget.plot.has_data()
    widget.parameters.iso_level.value = 0.7
    assert viewer.layers["atoms order"].iso_threshold == pytest.approx(0.7)
    widget.parameters.colour_by.value = "order_L10"
    order = points.features["order_L10"].to_numpy()
    assert not np.allclose(points.face_color[np.argmax(order)], points.face_color[np.argmin(order)])
    widget.nuclei_list.setCurrentRow(1)
    x, y, z = widget.analysis.nuclei.centroid[1]
    assert np.allclose(viewer.camera.center, (z, y, x))
    assert "nuclei" in widget.message.text()

    viewer.dims.ndisplay = 3
    viewer.reset_view()
    for name in ("atoms", "atoms order", "atoms nuclei"):
        viewer.layers[name].visible = False
    atoms_only = screenshot(viewer)
    viewer.layers["atoms analysis"].visible = False
    empty = screenshot(viewer)
    viewer.layers["atoms order"].visible = True
    surface = screenshot(viewer)
    assert changed_fraction(empty, empty[:1, :1]) == 0
    assert changed_fraction(atoms_only, empty) > 0.02  # the analysed atoms are drawn
    assert changed_fraction(surface, empty) > 0.005  # the iso-surface of the order volume is drawn


def test_analyse_cancel_mid_run(make_napari_viewer, qtbot, times, monkeypatch):
    import threading

    reached, release = threading.Event(), threading.Event()
    real = analyze_module.fit_lattice

    def paused(*args, **kwargs):
        reached.set()
        release.wait(WAIT_MS / 1000)
        return real(*args, **kwargs)

    monkeypatch.setattr(analyze_module, "fit_lattice", paused)
    viewer = make_napari_viewer()
    show_layer(viewer, atoms_layer(times[0], (96, 96, 96), VOXEL, name="atoms"))
    widget = AnalyseWidget(viewer)
    qtbot.addWidget(widget)
    widget.run()
    qtbot.waitUntil(reached.is_set, timeout=WAIT_MS)
    widget.cancel()
    release.set()
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    assert widget.last_outcome == "cancelled" and "atoms analysis" not in viewer.layers


def test_analyse_needs_an_atoms_layer(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = AnalyseWidget(viewer)
    qtbot.addWidget(widget)
    widget.run()
    assert widget.message.text().startswith("⚠") and "no atoms layer" in widget.message.text()
    assert analyse_module.phase_colours(np.array(["A1", "L10", "L12"]), np.array(["", "z", "A3B:0"])).shape == (3, 4)


def test_time_series_widget_tracks_and_renders(make_napari_viewer, qtbot, times, tmp_path):
    for t, atoms in enumerate(times):
        write_atoms(tmp_path / f"atoms{t}.csv", atoms)
        analyze_to_directory(tmp_path / f"atoms{t}.csv", tmp_path / f"t{t}")
    viewer = make_napari_viewer()
    widget = TimeSeriesWidget(viewer)
    qtbot.addWidget(widget)
    widget.run()
    assert "at least two time points" in widget.message.text()
    for t in range(2):
        widget.add_directory(path=str(tmp_path / f"t{t}"))
    assert run_and_wait(qtbot, widget) == "done", widget.message.text()
    layer = viewer.layers["time series"]
    assert layer.data.shape == (sum(map(len, times)), 4)
    assert set(layer.features["time"]) == {0, 1} and (layer.features["nucleus_track"] >= 0).any()
    assert viewer.dims.ndim == 4 and widget.plot.has_data() and "residuals" in widget.message.text()
    # the same site keeps its track and, registered, its place
    site = [a.features["site"] for a in times]
    _, i0, i1 = np.intersect1d(site[0], site[1], return_indices=True)
    tracks = [layer.features["track"][layer.features["time"] == t].to_numpy() for t in (0, 1)]
    assert np.mean(tracks[0][i0] == tracks[1][i1]) > 0.995
    viewer.dims.ndisplay = 3
    viewer.reset_view()
    drawn = screenshot(viewer)
    layer.visible = False
    empty = screenshot(viewer)
    assert changed_fraction(drawn, empty) > 0.02


def test_time_series_from_the_study(make_napari_viewer, qtbot, times):
    viewer = make_napari_viewer()
    widget = TimeSeriesWidget(viewer)
    qtbot.addWidget(widget)
    session = widget.session
    noise = times[1].positions[:30] + [[0.3, 1.4, 0.9]]  # the study keeps its noise peaks, flagged
    with_noise = type(times[1])(np.vstack([times[1].positions, noise]),
                                np.concatenate([times[1].species, [""] * 30]).astype(object),
                                {"non_atom": np.arange(len(times[1]) + 30) >= len(times[1])})
    session.point.atoms = times[0]
    from napari_aet._napari._base import tag_as_study

    own = show_layer(viewer, tag_as_study(atoms_layer(times[0], (96, 96, 96), VOXEL, name="atoms"), session, "atoms"))
    session.add_time_point("t1").atoms = with_noise
    widget.use_study()
    assert widget.sources.count() == 2
    assert run_and_wait(qtbot, widget) == "done", widget.message.text()
    assert len(viewer.layers["time series"].data) == sum(map(len, times))  # the atoms only, as Analyse takes
    (ax,) = widget.plot.figure.axes  # the time points by their names, not 0, 0.25, 0.5 …
    assert [tick.get_text() for tick in ax.get_xticklabels()] == ["t0", "t1"]
    assert not own.visible and "own layers are hidden (1: each in its own frame)" in widget.message.text()
    from napari_aet._napari.workbench import Workbench

    workbench = Workbench(viewer)
    qtbot.addWidget(workbench)
    workbench.select_time_point(1)
    workbench.select_time_point(0)  # its layers come back, the time series (time 0's frame) goes
    assert own.visible and not viewer.layers["time series"].visible


def test_analyse_keeps_its_result_in_the_study(make_napari_viewer, qtbot, times):
    """The analysis of an atoms layer is the study's analyse stage: status done, atoms kept."""
    from napari_aet.workflow import status

    viewer = make_napari_viewer()
    atoms = times[0]
    show_layer(viewer, atoms_layer(atoms, (96, 96, 96), VOXEL, name="atoms"))
    widget = AnalyseWidget(viewer)
    qtbot.addWidget(widget)
    assert run_and_wait(qtbot, widget) == "done"
    point = widget.session.point
    assert status(point)["analyse"] == "done" and len(point.analysis) == len(atoms)
    assert "analyse ✓" in widget.status.text()


def test_analyse_an_amorphous_film_without_a_lattice(make_napari_viewer, qtbot):
    """Lattice "none (amorphous)" chosen in the combo box: structure only, and the message says what was skipped."""
    from qtpy.QtCore import Qt

    viewer = make_napari_viewer()
    show_layer(viewer, atoms_layer(amorphous_slab(elements=("Ta",), seed=0), (40, 96, 96), VOXEL, name="film"))
    widget = AnalyseWidget(viewer)
    qtbot.addWidget(widget)
    combo = widget.parameters.lattice.native
    assert combo.currentText() == "auto"
    combo.setCurrentIndex(combo.findText("none (amorphous)"))
    assert widget.values()["lattice"] == "none"
    qtbot.mouseClick(widget.run_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    assert widget.last_outcome == "done", widget.message.text()
    message = widget.message.text()
    assert "no lattice (amorphous)" in message and "skipped: lattice fit, chemical order, nuclei, strain" in message
    points = viewer.layers["film analysis"]
    assert {"coordination", "Q4", "Q6"} <= set(points.features.columns) and "phase" not in points.features
    assert "film order" not in viewer.layers and "film nuclei" not in viewer.layers
    assert widget.parameters.colour_by.value == "Q6" and widget.nuclei_list.count() == 0
    q6 = points.features["Q6"].to_numpy()
    assert not np.allclose(points.face_color[np.argmax(q6)], points.face_color[np.argmin(q6)])
    pdf, histogram, _ = widget.plot.figure.axes
    assert pdf.lines and histogram.get_xlabel() == "Q4, Q6 (fcc = 1)" and histogram.patches


def test_a_reference_opened_beside_edited_study_atoms_never_replaces_them(make_napari_viewer, qtbot, times, tmp_path):
    """A published model opened with File > Open to compare does not become the steps' atoms
    input, and chosen by hand it is refused: the study's hand-edited atoms and their log stay."""
    from qtpy.QtCore import Qt

    from napari_aet import edit, workflow
    from napari_aet._napari.edit import EditWidget

    viewer = make_napari_viewer()
    show_layer(viewer, atoms_layer(times[0], (96, 96, 96), VOXEL, name="atoms"))
    widget = AnalyseWidget(viewer)
    qtbot.addWidget(widget)
    assert run_and_wait(qtbot, widget) == "done"  # the layer is now the study's atoms
    point = widget.session.point
    workflow.edit_atoms(point, edit.delete(point.atoms, [0]), removed=[0])
    viewer.layers["atoms"].data = viewer.layers["atoms"].data[1:]
    edited, log = point.atoms, list(point.edits)
    editor = EditWidget(viewer)
    qtbot.addWidget(editor)
    write_atoms(tmp_path / "published.csv", times[1])
    viewer.open(tmp_path / "published.csv", plugin="napari-aet")
    assert "published" in viewer.layers
    assert widget.atoms_input.currentText() == "atoms" and editor.atoms_input.currentText() == "atoms"
    widget.atoms_input.setCurrentText("published")
    qtbot.mouseClick(widget.run_button, Qt.LeftButton)
    assert "'published' is not the study's atoms" in widget.message.text()
    assert point.atoms is edited and point.edits == log and len(log) == 1
