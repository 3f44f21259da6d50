"""napari reader and writers, called without a viewer, plus one File > Open through a viewer."""

import warnings

import mrcfile
import numpy as np
import pandas as pd
import pytest

from napari_aet._napari import layers
from napari_aet.geometry import voxel_to_specimen
from napari_aet.io import read_atoms, read_tilt_series, read_volume, write_atoms, write_tilt_series
from napari_aet.io import write_volume as write_volume_file
from napari_aet._napari.hooks import enclosing_shape, get_reader, write_atoms as write_atoms_hook
from napari_aet._napari.hooks import write_volume as write_volume_hook
from napari_aet.model import InputError, Reconstruction, TiltSeries
from napari_aet.project import Project, TimePoint, save_project
from napari_aet.simulate import sample_fept


@pytest.fixture(scope="module")
def sample():
    return sample_fept(size=64, radius=8)


def open_layers(path):
    reader = get_reader(str(path))
    assert reader is not None
    return reader(str(path))


def as_layer(layer_tuple):
    """What napari passes a writer: the data and the layer's attributes."""
    data, attributes, kind = layer_tuple
    return data, attributes


def cube(n=32, voxel=0.5):
    return Reconstruction(np.random.default_rng(0).random((n, n, n), dtype=np.float32), voxel, "wbp")


def test_get_reader_declines(tmp_path):
    assert get_reader(str(tmp_path / "image.png")) is None
    assert get_reader([str(tmp_path / "a.mrc"), str(tmp_path / "b.mrc")]) is None
    assert get_reader(str(tmp_path)) is None
    assert get_reader([str(tmp_path / "a.mrc")]) is not None


def test_tilt_series_file(tmp_path, sample):
    series = sample.tilt_series
    write_tilt_series(tmp_path / "fept.mrc", series)
    [(data, attributes, kind)] = open_layers(tmp_path / "fept.mrc")
    assert kind == "image" and attributes["name"] == "fept"
    np.testing.assert_array_equal(data[:, 0], series.projections)  # (tilt, z, y, x)
    meta = attributes["metadata"]["aet"]
    assert meta["kind"] == "tilt_series" and meta["pixel_size"] == pytest.approx(0.4)
    np.testing.assert_allclose(meta["angles"], series.angles)
    assert attributes["scale"][-2:] == pytest.approx((0.4, 0.4))


def test_cubic_mrc_without_angles_is_a_volume(tmp_path):
    rec = cube()
    write_volume_file(tmp_path / "rec.mrc", rec)
    [(data, attributes, kind)] = open_layers(tmp_path / "rec.mrc")
    assert kind == "image" and attributes["metadata"]["aet"]["kind"] == "volume"
    np.testing.assert_array_equal(data, rec.volume)
    assert attributes["scale"] == pytest.approx((0.5,) * 3)
    assert attributes["translate"] == pytest.approx((-8.0,) * 3)


def test_volume_decision(tmp_path, sample):
    """ispg 1 says volume even when not cubic; a sidecar says tilt series even when cubic; .rec is a volume."""
    flat = Reconstruction(np.ones((10, 30, 40), np.float32), 0.5)
    write_volume_file(tmp_path / "flat.mrc", flat)
    assert open_layers(tmp_path / "flat.mrc")[0][1]["metadata"]["aet"]["kind"] == "volume"
    cubic_series = TiltSeries(np.random.default_rng(0).random((64, 64, 64), np.float32), np.linspace(-63, 63, 64), 0.4)
    write_tilt_series(tmp_path / "cubic.mrc", cubic_series)
    assert open_layers(tmp_path / "cubic.mrc")[0][1]["metadata"]["aet"]["kind"] == "tilt_series"
    with mrcfile.new(tmp_path / "stack.rec") as mrc:
        mrc.set_data(np.ones((5, 30, 40), np.float32))
        mrc.set_image_stack()
        mrc.voxel_size = 0.5
    assert open_layers(tmp_path / "stack.rec")[0][1]["metadata"]["aet"]["kind"] == "volume"


def test_missing_pixel_size_uses_one_angstrom_and_warns(tmp_path, sample):
    np.save(tmp_path / "s.npy", sample.tilt_series.projections)
    np.savetxt(tmp_path / "s.tlt", sample.tilt_series.angles)
    with pytest.warns(UserWarning, match="s.npy has no pixel size in its metadata: it is shown with 1 Å"):
        [(data, attributes, kind)] = open_layers(tmp_path / "s.npy")
    meta = attributes["metadata"]["aet"]
    assert meta["pixel_size"] == 1.0 and meta["info"]["pixel_size_unknown"] is True
    np.save(tmp_path / "v.npy", np.ones((16, 16, 16), np.float32))
    with pytest.warns(UserWarning, match="v.npy has no voxel size"):
        [(data, attributes, kind)] = open_layers(tmp_path / "v.npy")
    assert attributes["metadata"]["aet"]["voxel_size_unknown"] is True


def test_calibrated_file_does_not_warn(tmp_path, sample):
    write_tilt_series(tmp_path / "s.tif", sample.tilt_series)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        open_layers(tmp_path / "s.tif")


@pytest.mark.parametrize("ext", ["csv", "xyz"])
def test_atom_table(tmp_path, sample, ext):
    atoms = sample.atoms
    write_atoms(tmp_path / f"atoms.{ext}", atoms)
    [(data, attributes, kind)] = open_layers(tmp_path / f"atoms.{ext}")
    assert kind == "points" and attributes["scale"] == (1.0, 1.0, 1.0)
    shape = attributes["metadata"]["aet"]["volume_shape"]
    assert shape == list(enclosing_shape(atoms))
    half = shape[0] // 2
    assert half - 1 <= np.abs(atoms.positions).max() + 1 <= half + 1 and shape[0] % 2 == 1
    assert np.all((data >= 0) & (data <= shape[0] - 1))
    np.testing.assert_allclose(voxel_to_specimen(data, shape, 1.0), atoms.positions, atol=1e-12)
    world = data * attributes["scale"] + attributes["translate"]  # what the viewer shows, Å
    np.testing.assert_allclose(world[:, ::-1], atoms.positions, atol=1e-12)
    assert list(attributes["features"]["element"]) == list(atoms.species)


def test_project_gives_every_layer(tmp_path, sample):
    rec = cube(64, 0.4)
    project = Project([TimePoint("t0", sample.tilt_series, sample.tilt_series, rec, sample.atoms),
                       TimePoint("t1", atoms=sample.atoms)])
    save_project(tmp_path / "run.aet", project)
    out = open_layers(tmp_path / "run.aet")
    assert [a["name"] for _, a, _ in out] == ["t0: raw tilt series", "t0: aligned tilt series", "t0: reconstruction",
                                              "t0: atoms", "t1: atoms"]
    assert [k for _, _, k in out] == ["image", "image", "image", "points", "points"]
    meta = out[3][1]["metadata"]["aet"]
    assert {key: meta[key] for key in ("kind", "volume_shape", "voxel_size")} == {
        "kind": "atoms", "volume_shape": [64, 64, 64], "voxel_size": 0.4}
    assert [a["metadata"]["aet"]["study_field"] for _, a, _ in out] == ["raw", "aligned", "reconstruction",
                                                                          "atoms", "atoms"]
    assert out[4][1]["metadata"]["aet"]["voxel_size"] == 1.0


def test_reader_errors_are_input_errors(tmp_path):
    (tmp_path / "junk.mrc").write_text("not an MRC file")
    with pytest.raises(InputError, match="cannot read junk.mrc as MRC data"):
        open_layers(tmp_path / "junk.mrc")
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="bad.csv: atom table lacks column"):
        open_layers(tmp_path / "bad.csv")


def test_write_volume_hook(tmp_path):
    rec = cube(24, 0.35)
    for ext in ("mrc", "tif"):
        path = tmp_path / f"v.{ext}"
        assert write_volume_hook(str(path), *as_layer(layers.volume_layer(rec))) == [str(path)]
        back = read_volume(path)
        np.testing.assert_array_equal(back.volume, rec.volume)
        assert back.voxel_size == pytest.approx(0.35, rel=1e-6)


def test_write_volume_hook_for_foreign_image_uses_scale(tmp_path):
    data = np.ones((8, 9, 10), np.float32)
    write_volume_hook(str(tmp_path / "v.mrc"), data, {"name": "x", "metadata": {}, "scale": (0.3, 0.3, 0.3)})
    assert read_volume(tmp_path / "v.mrc").voxel_size == pytest.approx(0.3, rel=1e-6)
    with pytest.raises(InputError, match="is not a volume: expected 3D data"):
        write_volume_hook(str(tmp_path / "w.mrc"), np.ones((8, 8), np.float32), {"name": "x", "metadata": {}})


def test_write_tilt_series_layer(tmp_path, sample):
    series = sample.tilt_series
    paths = write_volume_hook(str(tmp_path / "s.tif"), *as_layer(layers.tilt_series_layer(series)))
    assert paths == [str(tmp_path / "s.tif"), str(tmp_path / "s.tlt")]
    back = read_tilt_series(tmp_path / "s.tif")
    np.testing.assert_array_equal(back.projections, series.projections)
    np.testing.assert_allclose(back.angles, series.angles, atol=1e-8)


@pytest.mark.parametrize("ext", ["csv", "xyz"])
def test_write_atoms_hook(tmp_path, sample, ext):
    layer = layers.atoms_layer(sample.atoms, (64, 64, 64), 0.4)
    path = tmp_path / f"a.{ext}"
    assert write_atoms_hook(str(path), *as_layer(layer)) == [str(path)]
    back = read_atoms(path)
    np.testing.assert_allclose(back.positions, sample.atoms.positions, atol=1e-9)
    np.testing.assert_array_equal(back.species, sample.atoms.species)
    np.testing.assert_array_equal(back.features["ordered"], sample.atoms.features["ordered"])


def test_write_atoms_hook_leaves_the_non_atoms_out_as_the_command_line_does(tmp_path, sample):
    non_atom = np.arange(len(sample.atoms)) < 5
    atoms = sample.atoms.with_features(non_atom=non_atom)
    atoms.species[non_atom] = ""
    layer = layers.atoms_layer(atoms, (64, 64, 64), 0.4)
    with pytest.warns(UserWarning, match=f"keeps the {len(atoms) - 5} atoms of layer .*, not its 5 non-atoms"):
        write_atoms_hook(str(tmp_path / "a.csv"), *as_layer(layer))
    back = read_atoms(tmp_path / "a.csv")
    np.testing.assert_allclose(back.positions, atoms.positions[~non_atom], atol=1e-9)
    assert "" not in set(back.species)


def test_write_atoms_hook_for_foreign_points(tmp_path):
    data = np.array([[1.0, 2.0, 3.0], [0.0, -1.0, 4.0]])  # (z, y, x) layer coordinates
    attributes = {"name": "clicked", "metadata": {}, "scale": (0.5, 0.5, 0.5), "translate": (-1.0, 0.0, 1.0),
                  "features": pd.DataFrame({"element": ["Pt", "Fe"], "score": [0.9, 0.1]})}
    write_atoms_hook(str(tmp_path / "a.csv"), data, attributes)
    back = read_atoms(tmp_path / "a.csv")
    np.testing.assert_allclose(back.positions, [[2.5, 1.0, -0.5], [3.0, -0.5, -1.0]])
    assert list(back.species) == ["Pt", "Fe"] and list(back.features["score"]) == [0.9, 0.1]
    with pytest.raises(InputError, match="holds 2D points: atoms need 3D points"):
        write_atoms_hook(str(tmp_path / "b.csv"), data[:, :2], {"name": "flat", "metadata": {}})


def test_viewer_open(tmp_path, sample, make_napari_viewer):
    write_tilt_series(tmp_path / "fept.mrc", sample.tilt_series)
    write_atoms(tmp_path / "fept_atoms.csv", sample.atoms)
    viewer = make_napari_viewer()
    [series_layer] = viewer.open(str(tmp_path / "fept.mrc"), plugin="napari-aet")
    assert series_layer.data.shape == (51, 1, 64, 64)  # (tilt, z, y, x): the tilts have a slider of their own
    assert layers.tilt_series_from_layer(series_layer).pixel_size == pytest.approx(0.4)
    [points] = viewer.open(str(tmp_path / "fept_atoms.csv"), plugin="napari-aet")
    np.testing.assert_allclose(layers.atoms_from_layer(points).positions, sample.atoms.positions, atol=1e-9)
    from napari import save_layers

    assert save_layers(str(tmp_path / "saved.xyz"), [points], plugin="napari-aet") == [str(tmp_path / "saved.xyz")]
    np.testing.assert_allclose(read_atoms(tmp_path / "saved.xyz").positions, sample.atoms.positions, atol=1e-9)


def test_disagreeing_imod_sidecars_open_with_the_angles_unknown(tmp_path, sample):
    series = sample.tilt_series
    write_tilt_series(tmp_path / "s.st", series)
    np.savetxt(tmp_path / "s.rawtlt", series.angles)
    np.savetxt(tmp_path / "s.tlt", series.angles[::-1])
    with pytest.warns(UserWarning, match="s.tlt and s.rawtlt beside s.st disagree .*in the AET workbench's Data step"):
        [(data, attributes, kind)] = open_layers(tmp_path / "s.st")
    assert kind == "image" and attributes["metadata"]["aet"]["angles_unknown"] is True
    assert "s.tlt and s.rawtlt beside s.st disagree" in attributes["metadata"]["aet"]["angles_unknown_why"]
    np.testing.assert_array_equal(attributes["metadata"]["aet"]["angles"], np.arange(series.n_angles))
