"""The AET workbench: one dock that fits the screen, data entry, the study saved and reopened."""

import numpy as np
import pytest
import tifffile
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QApplication, QFileDialog

from napari_aet._napari._base import study_tag
from napari_aet._napari.data import parse_angle_range
from napari_aet._napari.layers import projections_of
from napari_aet.model import InputError, TiltSeries
from napari_aet.project import save_project
from napari_aet.session import StudySession
from napari_aet.simulate import fcc_particle, simulate_tilt_series
from napari_aet.workflow import status

WAIT_MS = 60_000


@pytest.fixture(scope="module")
def plain_tiff(tmp_path_factory):
    """A 31-tilt series saved as a bare TIFF: no pixel size, no angles, nothing beside it."""
    atoms = fcc_particle(radius=6.0, seed=2)
    series = simulate_tilt_series(atoms, np.linspace(-70, 70, 31), shape=(48, 48), max_shift=0, seed=2).tilt_series
    path = tmp_path_factory.mktemp("plain") / "particle.tif"
    tifffile.imwrite(path, series.projections)
    return path, series


def workbench_in(make_napari_viewer):
    viewer = make_napari_viewer()
    _, workbench = viewer.window.add_plugin_dock_widget("napari-aet", "AET workbench")
    return viewer, workbench


@pytest.mark.parametrize("screen_height", [1024, 800])
def test_the_workbench_fits_a_1280_wide_screen(make_napari_viewer, screen_height):
    """Every step sits in one dock whose content scrolls: the window stays within the screen
    (six separate docks made it 3,011 px tall)."""
    viewer, workbench = workbench_in(make_napari_viewer)
    window = viewer.window._qt_window
    window.resize(1280, screen_height - 24)
    viewer.window.show()
    for index in range(workbench.stack.count()):  # the tallest step decides nothing
        workbench.step_buttons.button(index).click()
        QApplication.processEvents()
        assert workbench.stack.currentIndex() == index
        assert window.frameGeometry().height() <= screen_height
        assert workbench.height() <= window.height()
    buttons = [workbench.step_buttons.button(i) for i in range(workbench.stack.count())]
    assert [b.text() for b in buttons] == ["Data", "1 Align", "2 Reconstruct", "3 Trace", "4 Classify", "5 Refine",
                                           "6 Edit", "7 Analyse", "8 Time series"]
    assert all(b.isVisible() and b.width() >= b.sizeHint().width() for b in buttons)  # every step in view, unclipped


def test_the_steps_fill_the_dock_docked_after_other_docks_were_closed(make_napari_viewer):
    """napari adds a stretch below a dock's widgets unless one wants the height: the step under the
    buttons took 326 px of a 1,216-px dock (its Run button and message out of view)."""
    viewer = make_napari_viewer()
    viewer.window.show()
    viewer.window._qt_window.resize(1280, 1150)  # taller than the workbench needs
    for name in ("0 Data", "1 Align"):
        dock, _ = viewer.window.add_plugin_dock_widget("napari-aet", name)
        QApplication.processEvents()
        viewer.window.remove_dock_widget(dock)
    _, workbench = viewer.window.add_plugin_dock_widget("napari-aet", "AET workbench")
    for _ in range(5):
        QApplication.processEvents()
    assert workbench.height() - workbench.stack.geometry().bottom() < 30  # no empty space below the step


def test_the_steps_docked_together_fit_a_1280x800_screen(make_napari_viewer):
    """Each step scrolls inside its dock: Data and Align docked in turn keep the window on the
    screen (Align alone needed 820 px; the two made the window 1,283 px tall)."""
    viewer = make_napari_viewer()
    viewer.window.show()
    window = viewer.window._qt_window
    window.resize(1280, 776)
    for name in ("0 Data", "1 Align", "2 Reconstruct"):
        dock, _ = viewer.window.add_plugin_dock_widget("napari-aet", name)
        QApplication.processEvents()
        assert dock.minimumSizeHint().height() < 200
    assert window.frameGeometry().height() <= 800


def test_a_plain_tiff_gets_its_pixel_size_and_angles_in_the_data_step(make_napari_viewer, plain_tiff, qtbot):
    path, series = plain_tiff
    viewer, workbench = workbench_in(make_napari_viewer)
    with pytest.warns(UserWarning, match="no tilt angles"):
        viewer.open(path, plugin="napari-aet")
    layer = viewer.layers["particle"]
    data, align = workbench.steps["Data"], workbench.steps["1 Align"]
    assert "angles are unknown" in data.message.text() and "pixel size is unknown" in data.message.text()
    align.run()  # refused with a message, not a guess
    assert "enter them in the AET workbench's Data step" in align.message.text()

    data.set_range("-70, 70, 5")  # 29 angles for 31 projections
    assert "gives 29 angles but the series has 31" in data.message.text()
    data.set_range("-70, 70")
    data.pixel_size.setValue(0.04)  # 0.4 Å typed in nm, before the elements are known
    assert data.apply() is None and "(of any elements: no elements given) 1.12 Å apart would be 28 pixels" \
        in data.message.text()
    data.elements.setText("fe, pt")
    data.pixel_size.setValue(4.0)  # 0.4 nm typed as Å would be: too coarse for FePt's atoms
    assert data.apply() is None and "too few to tell them apart" in data.message.text()
    data.pixel_size.setValue(0.4)
    assert data.message.text() == ""  # nothing unknown any more
    data.tilt_axis.setValue(-95.0)
    assert data.apply() is not None
    assert align.message.text() == ""  # its warning about the unknown angles is gone with them
    assert align.parameters.tilt_axis.value == -95.0  # the Align step's field follows the study's series
    raw = workbench.session.point.raw
    assert raw.pixel_size == 0.4 and np.allclose(raw.angles, series.angles)
    assert raw.metadata["angles_from"] == "the range -70, 70"  # kept with the study, shown when reopened
    assert workbench.session.point.parameters["elements"] == ["Fe", "Pt"] and data.elements.text() == "Fe,Pt"
    assert tuple(layer.scale[-2:]) == (0.4, 0.4) and "angles_unknown" not in layer.metadata["aet"]
    assert study_tag(layer) == (workbench.session.id, "t0", "raw")
    # a stage's output (here an aligned series) does not become the Data step's input by itself:
    # "Use for the study" would have made it the study's data
    from napari_aet._napari._base import show_layer, tag_as_study
    from napari_aet._napari.layers import tilt_series_layer

    show_layer(viewer, tag_as_study(tilt_series_layer(raw, name="particle aligned"), workbench.session, "aligned"))
    assert data.series_input.currentText() == "particle"

    qtbot.keyClicks(data.exclude, "4, 11, 40")  # bad images named by the refinement; 40 is not there
    assert data.apply() is None and "no projection [40] among the 31" in data.message.text()
    data.exclude.clear()
    qtbot.keyClicks(data.exclude, "4, 11")
    assert data.apply() is not None
    assert f"29 projections (4 at {series.angles[4]:+.1f}°, 11 at {series.angles[11]:+.1f}° left out" \
        in data.message.text()
    raw = workbench.session.point.raw
    assert raw.n_angles == 29 and np.allclose(raw.angles, np.delete(series.angles, [4, 11]))
    assert raw.file_indices()[4] == 5  # counted in the file, as the field and the command line count
    # the layer keeps every projection: the indices stay those typed, and applying again changes nothing
    assert np.shape(layer.data)[0] == 31 and data.exclude.text() == "4, 11"
    assert data.apply().n_angles == 29 and "unchanged" in data.message.text()
    data.exclude.clear()  # taken back
    assert data.apply().n_angles == 31 and workbench.session.point.raw.n_angles == 31


def test_a_placeholder_pixel_size_is_confirmed_by_using_it(make_napari_viewer, plain_tiff):
    """A file without a pixel size shows 1 Å, a placeholder no stage runs on; "Use for the study"
    with 1 Å shown takes it as the person's value (a real 1 Å pixel can be confirmed)."""
    path, _ = plain_tiff
    viewer, workbench = workbench_in(make_napari_viewer)
    with pytest.warns(UserWarning, match="no tilt angles"):
        viewer.open(path, plugin="napari-aet")
    data = workbench.steps["Data"]
    data.set_range("-70, 70")
    assert "pixel size is unknown" in data.message.text()
    # the study holding the series with its placeholder (as a stage taking the layer as it was would)
    layer = viewer.layers["particle"]
    flagged = TiltSeries(projections_of(layer), parse_angle_range("-70, 70", 31), 1.0,
                         metadata={"pixel_size_unknown": True})
    workbench.session.set_raw(flagged)
    assert data.apply() is not None and "unchanged" not in data.message.text()  # 1 Å shown and used: confirmed
    raw = workbench.session.point.raw
    assert raw.pixel_size == 1.0 and "pixel_size_unknown" not in raw.metadata
    assert "pixel size is unknown" not in data.message.text()


def test_elements_entered_after_the_reconstruction_leave_it_current(make_napari_viewer, qtbot):
    viewer, workbench = workbench_in(make_napari_viewer)
    viewer.open_sample("napari-aet", "fept")  # File > Open Sample
    step = workbench.steps["Data"]
    assert step.elements.text() == "Fe,Pt"  # the sample knows what it holds
    step.elements.clear()
    qtbot.mouseClick(step.apply_button, Qt.LeftButton)
    session = workbench.session
    session.run("reconstruct", method="wbp")
    session.run("trace")
    qtbot.keyClicks(step.elements, "Fe,Pt")
    qtbot.mouseClick(step.apply_button, Qt.LeftButton)
    assert status(session.point)["reconstruct"] == "done" and status(session.point)["trace"] == "stale"
    assert session.point.parameters["elements"] == ["Fe", "Pt"] and "unchanged" in step.message.text()
    assert "trace again (its minimum distance comes from the elements)" in step.message.text()


def test_a_study_saved_from_the_workbench_reopens_with_its_layers(make_napari_viewer, plain_tiff, tmp_path):
    _, series = plain_tiff
    viewer, workbench = workbench_in(make_napari_viewer)
    workbench.session.set_raw(series)
    workbench.add_time_point("16 min")
    assert workbench.session.point.name == "16 min" and workbench.time_points.currentText() == "16 min"
    workbench.add_time_point("16 min")
    assert "already has a time point" in workbench.message.text()
    workbench.save_study(tmp_path / "particle.aet")
    assert workbench.study_label.text().endswith("particle.aet")

    other_viewer, other = workbench_in(make_napari_viewer)
    other.open_study(tmp_path / "particle.aet")
    assert [other.time_points.itemText(i) for i in range(other.time_points.count())] == ["t0", "16 min"]
    other.select_time_point(0)
    (layer,) = [layer for layer in other_viewer.layers if study_tag(layer)[1:] == ("t0", "raw")]
    np.testing.assert_array_equal(projections_of(layer), series.projections)
    assert status(other.session.point)["align"] == "not run"


def test_open_recovers_the_autosave_of_a_study_never_saved(make_napari_viewer, plain_tiff, qtbot, monkeypatch,
                                                          tmp_path):
    """After a crash, Open… on the autosave of a study never saved brings it back, still unsaved;
    Save asks for a name, and the autosave goes."""
    _, series = plain_tiff
    crashed = StudySession()
    crashed.set_raw(series)
    crashed.add_time_point("16 min")
    save_project(crashed.autosave_path, crashed.study)  # as autosaved after a stage; then napari crashed
    viewer, workbench = workbench_in(make_napari_viewer)
    # the new napari says where that work is (the autosave folder is not a place a person looks)
    assert "an unsaved study was autosaved at" in workbench.message.text()
    assert f"Open… {crashed.autosave_path} to recover that work" in workbench.message.text()

    def click(button, dialog, path):
        monkeypatch.setattr(QFileDialog, dialog, lambda *args, **kwargs: (str(path), ""))
        qtbot.mouseClick(button, Qt.MouseButton.LeftButton)

    click(workbench.open_button, "getOpenFileName", tmp_path / "missing.aet")
    assert "missing.aet does not exist, nor any autosave of it" in workbench.message.text()
    click(workbench.open_button, "getOpenFileName", crashed.autosave_path)
    assert "recovered an unsaved study" in workbench.message.text() and "Save it" in workbench.message.text()
    assert workbench.study_label.text().endswith("unsaved (autosaved)")
    assert [workbench.time_points.itemText(i) for i in range(workbench.time_points.count())] == ["t0", "16 min"]
    workbench.select_time_point(0)
    (layer,) = [layer for layer in viewer.layers if study_tag(layer)[1:] == ("t0", "raw")]
    np.testing.assert_array_equal(projections_of(layer), series.projections)

    click(workbench.save_button, "getSaveFileName", tmp_path / "particle.aet")
    assert workbench.study_label.text().endswith("particle.aet") and (tmp_path / "particle.aet").exists()
    assert not crashed.autosave_path.exists()


def test_each_time_point_has_its_layers_together_named_and_shown_alone(make_napari_viewer, plain_tiff, qtbot,
                                                                         tmp_path):
    """napari 0.9 has no layer groups: with two time points each one's layers carry its name as a
    prefix and sit together in the layer list; choosing a time point shows its layers only; the
    user's own layers are left alone."""
    path, series = plain_tiff
    later = tmp_path / "particle_16min.tif"
    tifffile.imwrite(later, series.projections[:, ::-1])
    viewer, workbench = workbench_in(make_napari_viewer)
    data, reconstruct = workbench.steps["Data"], workbench.steps["2 Reconstruct"]
    reconstruct.parameters.method.value = "wbp"

    def enter_data_and_reconstruct(file):
        with pytest.warns(UserWarning, match="no tilt angles"):
            viewer.open(file, plugin="napari-aet")
        data.pixel_size.setValue(0.4)
        data.set_range("-70, 70")
        assert data.apply() is not None
        reconstruct.run()
        qtbot.waitUntil(lambda: not reconstruct.running, timeout=WAIT_MS)
        assert reconstruct.last_outcome == "done", reconstruct.message.text()

    def points_in_order():
        return [study_tag(layer)[1] for layer in viewer.layers if study_tag(layer)[0] == workbench.session.id]

    enter_data_and_reconstruct(path)
    assert [layer.name for layer in viewer.layers] == ["particle", "particle wbp", "particle wbp reconstruction |FFT|"]
    viewer.add_points(name="my notes")
    workbench.add_time_point("16 min")
    assert [layer.name for layer in viewer.layers] == [
        "t0: particle", "t0: particle wbp", "t0: particle wbp reconstruction |FFT|", "my notes"]
    assert [layer.visible for layer in viewer.layers] == [False, False, False, True]
    trace = workbench.steps["3 Trace"]  # the new time point has no volume: t0's is no step's input
    assert trace.volume_input.layer() is None and trace.volume_input.currentText() == ""
    enter_data_and_reconstruct(later)
    assert trace.volume_input.currentText() == "16 min: particle_16min wbp"
    assert [layer.name for layer in viewer.layers][4:] == [
        "16 min: particle_16min", "16 min: particle_16min wbp", "16 min: particle_16min wbp reconstruction |FFT|"]

    assert data.series_input.currentText() == "16 min: particle_16min"
    workbench.select_time_point(0)  # back to t0, as it was (its tilt series hidden by Reconstruct)
    assert data.series_input.currentText() == "t0: particle"  # the Data step shows t0's data, not 16 min's
    assert [layer.visible for layer in viewer.layers] == [False] + [True] * 3 + [False] * 3
    reconstruct.parameters.fourier.value = "measured coverage"
    reconstruct.run()  # a new output joins t0's layers
    qtbot.waitUntil(lambda: not reconstruct.running, timeout=WAIT_MS)
    assert viewer.layers.index("t0: particle wbp measured coverage") == 3
    assert points_in_order() == ["t0"] * 4 + ["16 min"] * 3
    assert "my notes" in viewer.layers and viewer.layers["my notes"].visible
    workbench.select_time_point(1)
    assert [layer.name for layer in viewer.layers if layer.visible] == [
        "my notes", "16 min: particle_16min wbp", "16 min: particle_16min wbp reconstruction |FFT|"]


def test_angle_ranges():
    np.testing.assert_allclose(parse_angle_range("0, 177, 3", 60), np.arange(0, 178, 3.0))
    np.testing.assert_allclose(parse_angle_range("-60:60", 5), [-60, -30, 0, 30, 60])
    with pytest.raises(InputError, match="expected 'start, stop'"):
        parse_angle_range("minus seventy", 5)
