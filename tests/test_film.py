"""Extended objects: a simulated film wider than the field of view, its detection and reconstruction."""

import json

import numpy as np
import pytest

from napari_aet.analysis.atom_metrics import compare_atoms
from napari_aet.model import AtomModel, InputError
from napari_aet.pipeline import real_atoms, run_pipeline
from napari_aet.reconstruct import reconstruct
from napari_aet.backprojection import single_axis_equivalent
from napari_aet.reconstruct.extended import crop_to_box, detect_geometry, extended_width, pad_to_region
from napari_aet.reconstruct.resire import held_out_projections
from napari_aet.simulate import fcc_particle, fcc_slab, simulate_tilt_series

NY, NX, PIXEL = 24, 48, 0.4
ANGLES = np.linspace(-60, 60, 31)
HALF_BOX = NX * PIXEL / 2 - 1.0  # atoms compared inside the box, 1 Å from its x edges


@pytest.fixture(scope="module")
def film():
    """A Pt film 64 Å wide, 10 Å thick, in a 19.2 Å wide field of view."""
    slab = fcc_slab(size=(64.0, NY * PIXEL - 1.0), thickness=10.0, seed=0)
    series = simulate_tilt_series(slab, ANGLES, shape=(NY, NX), pixel_size=PIXEL, dose=400, max_shift=0,
                                  seed=0).tilt_series
    return series, slab.subset(np.abs(slab.positions[:, 0]) < HALF_BOX)


def in_box(atoms):
    atoms = real_atoms(atoms)
    return atoms.subset(np.abs(atoms.positions[:, 0]) < HALF_BOX)


def test_film_and_particle_are_told_apart(film):
    series, _ = film
    assert detect_geometry(series)[0] == "film"
    particle = simulate_tilt_series(fcc_particle(radius=6.0, seed=1), ANGLES, shape=(NX, NX), pixel_size=PIXEL,
                                    dose=400, max_shift=0, seed=0).tilt_series
    geometry, signal = detect_geometry(particle)
    assert geometry == "particle" and signal < 0.05


def test_a_neighbour_entering_the_field_counts_and_an_uneven_background_does_not():
    first, second = fcc_particle(radius=8.0, seed=1), fcc_particle(radius=8.0, seed=2)
    pair = AtomModel(np.concatenate([first.positions, second.positions + [30.0, 0.0, 20.0]]),
                     np.concatenate([first.species, second.species]))  # the second enters above ~25°
    series = simulate_tilt_series(pair, np.linspace(-70, 70, 41), shape=(48, 48), pixel_size=0.8, dose=400,
                                  max_shift=0).tilt_series
    assert detect_geometry(series)[0] == "film"
    # background 5 ± 2.5 counts per pixel varying across the image, a particle of 55 atoms
    alone = simulate_tilt_series(fcc_particle(radius=6.0, seed=2), np.linspace(-70, 70, 31), shape=(48, 48),
                                 max_shift=3, background=5.0, seed=2).tilt_series
    assert detect_geometry(alone)[0] == "particle"


def test_automatic_alignment_keeps_a_film_as_it_is_and_says_why(film, tmp_path, capsys):
    from napari_aet.align import align_auto
    from napari_aet.cli import main
    from napari_aet.io import write_tilt_series

    series, _ = film
    kept, report = align_auto(series)
    assert kept is series and report.skipped.startswith("kept as it is: the object fills the field of view")
    write_tilt_series(tmp_path / "film.tif", series)  # the CLI aligns by default: it runs, and says so
    assert main(["run", str(tmp_path / "film.tif"), "--pixel-size", "0.4", "--elements", "Pt", "--out",
                 str(tmp_path / "out"), "--no-refine"]) == 0
    assert "Alignment: kept as it is: the object fills the field of view" in capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["alignment"]["skipped"].startswith("kept as it is")


def test_extended_region_holds_every_ray_and_crops_back(film):
    series, _ = film
    width = extended_width(series)
    tilt = np.radians(60)
    assert width >= (NX / 2 + NX / 2 * np.sin(tilt)) / np.cos(tilt) * 2 and width % 2 == NX % 2
    box = np.arange(2 * 3 * NX, dtype=np.float32).reshape(2, 3, NX)
    region = pad_to_region(box, width)
    assert region.shape == (2, 3, width) and np.array_equal(crop_to_box(region, NX), box)
    assert np.all(region[..., 0] == box[..., 0]) and np.all(region[..., -1] == box[..., -1])


def test_film_reconstruction_fits_the_data_the_box_cannot(film):
    series, _ = film
    options = {"n_iterations": 15, "accelerate": True, "step": 1.0, "r_free_fraction": 0.1}
    box = reconstruct(series, "resire", **options)
    extended = reconstruct(series, "resire", object_width=extended_width(series), **options)
    assert extended.volume.shape == box.volume.shape == (NX, NY, NX)
    assert extended.errors["r_free"][-1] < 0.8 * box.errors["r_free"][-1]
    assert extended.errors["r_factor"][-1] < 0.8 * box.errors["r_factor"][-1]
    with pytest.raises(InputError, match="object_width must be a whole number >= 48"):
        reconstruct(series, "resire", object_width=20)


def test_held_out_projections_skip_the_extreme_tilts():
    chosen = held_out_projections(46, 0.05, seed=3)
    assert chosen.sum() == 2 and not chosen[0] and not chosen[-1]
    assert held_out_projections(10, 0.01, seed=0).sum() == 1 and held_out_projections(10, 0.0, seed=0).sum() == 0


def test_nearly_single_axis_euler_angles_project_as_single_tilts():
    tilts = np.linspace(-60, 60, 5)
    nearly = np.stack([np.full(5, 0.1), tilts, np.full(5, -0.1)], axis=1)
    assert np.array_equal(single_axis_equivalent(nearly, (48, 24, 48), 1.0), tilts)
    assert single_axis_equivalent(nearly, (48, 24, 48), 0.0).shape == (5, 3)  # 0 = always exact
    tilted_axis = np.stack([np.full(5, 30.0), tilts, np.full(5, -30.0)], axis=1)
    assert single_axis_equivalent(tilted_axis, (48, 24, 48), 1.0).shape == (5, 3)


def test_pipeline_detects_the_film_and_traces_no_ghost_atoms(film):
    series, truth = film
    found = {}
    for geometry, used, method in (("auto", "film", "resire"), ("particle", "particle", "genfire")):
        result = run_pipeline(series, "Pt", align=False, refine=False, geometry=geometry)
        found[geometry] = compare_atoms(in_box(result.atoms), truth, remove_translation=False)
        assert result.report["parameters"]["geometry"] == used
        assert result.report["reconstruction"]["method"] == method
        low, high = result.report["reconstruction"]["relative_totals"]  # a film's total grows with the tilt
        assert high - low > 0.2
    assert result.report["reconstruction"]["final_r_free"] is not None
    film_score, particle_score = found["auto"], found["particle"]
    assert film_score["recall"] >= 0.85 and film_score["precision"] >= 0.95
    # treated as a particle, a film loses atoms (its signal taken for background) or invents them
    assert min(film_score["recall"], film_score["precision"]) > min(particle_score["recall"],
                                                                    particle_score["precision"]) + 0.05
    assert film_score["rms_error_pm"] < particle_score["rms_error_pm"]


def test_cli_geometry_choice_reaches_the_report(film, tmp_path, capsys):
    from napari_aet.cli import main
    from napari_aet.io import write_tilt_series

    series, _ = film
    write_tilt_series(tmp_path / "film.tif", series)
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "film.tif"), "--pixel-size", "0.4", "--elements", "Pt", "--out", str(out),
                 "--no-align", "--no-refine", "--geometry", "particle"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["parameters"]["geometry"] == "particle" and report["reconstruction"]["method"] == "genfire"
    assert report["reconstruction"]["background"]["method"] == "smooth"  # a particle's: measured around it
    printed = capsys.readouterr().out
    assert "particle geometry (edge signal at high tilt" in printed
    assert "total intensities range" in printed  # a particle's should not spread so: the summary says why it may
    assert main(["run", str(tmp_path / "film.tif"), "--pixel-size", "0.4", "--elements", "Pt", "--out",
                 str(tmp_path / "as_film"), "--no-align", "--no-refine"]) == 0
    printed = capsys.readouterr().out
    assert "film geometry" in printed and "total intensities range" not in printed  # a film's always do
    film = json.loads((tmp_path / "as_film" / "report.json").read_text())
    assert film["reconstruction"]["background"] == {"method": "none"}  # no empty region to measure it in


@pytest.fixture
def film_reconstruct_widget(make_napari_viewer, qtbot, film):
    """A viewer holding the film's series as layer "film", and a Reconstruct widget on it."""
    from napari_aet._napari.reconstruct import ReconstructWidget
    from napari_aet._napari.layers import tilt_series_layer

    viewer = make_napari_viewer()
    data, kwargs, kind = tilt_series_layer(film[0], name="film")
    getattr(viewer, f"add_{kind}")(data, **kwargs)
    widget = ReconstructWidget(viewer)
    qtbot.addWidget(widget)
    return viewer, widget


def test_reconstruct_widget_reconstructs_a_film_as_an_extended_object(film_reconstruct_widget, qtbot, film):
    series, _ = film
    viewer, widget = film_reconstruct_widget
    widget.parameters.geometry.value = "film"  # shows RESIRE with the film's iteration settings
    assert widget.parameters.method.value == "resire" and widget.parameters.accelerate.value
    widget.parameters.n_iterations.value = 10
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert widget.last_outcome == "done"
    layer = viewer.layers["film resire"]
    assert layer.data.shape == (NX, NY, NX) and "film geometry" in widget.message.text()
    assert layer.metadata["aet"]["parameters"]["object_width"] == extended_width(series)
    assert len(layer.metadata["aet"]["errors"]["r_free"]) == 10


def test_reconstruct_widget_on_auto_shows_the_film_method_it_runs(film_reconstruct_widget, qtbot):
    from qtpy.QtCore import Qt

    viewer, widget = film_reconstruct_widget
    assert widget.parameters.geometry.value == "auto"
    assert widget.parameters.method.value == "resire" and widget.parameters.n_iterations.value == 40  # before Run
    assert "(a film)" in widget.message.text()
    widget.parameters.method.value = "genfire"  # chosen by hand: on Run, the form again shows what runs
    qtbot.mouseClick(widget.run_button, Qt.LeftButton)
    assert widget.parameters.method.value == "resire" and widget.parameters.n_iterations.value == 40
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert widget.last_outcome == "done" and "film geometry" in widget.message.text()
    assert len(viewer.layers["film resire"].metadata["aet"]["errors"]["r_free"]) == 40  # as the form says
