"""The .aet project file: a two-time-point run with edits and provenance survives save/load."""

import h5py
import numpy as np
import pytest

from napari_aet.model import InputError, Reconstruction
from napari_aet.project import Project, TimePoint, load_project, provenance, save_project
from napari_aet.simulate import sample_fept


@pytest.fixture(scope="module")
def project():
    first, second = sample_fept(size=64, radius=8, seed=0), sample_fept(size=64, radius=8, seed=1)
    raw = first.tilt_series
    aligned = raw.replace(shifts=first.true_shifts, tilt_axis=1.5,
                          metadata={**raw.metadata, "alignment": {"method": "cross-correlation", "passes": 3}})
    rec = Reconstruction(np.random.default_rng(0).random((64, 64, 64), dtype=np.float32), 0.4, "resire",
                         {"iterations": np.int64(50), "step": 0.5, "support": None},
                         {"r_factor": [0.4, 0.3, 0.25], "r_free": [0.45, 0.4, 0.38]}, {"seconds": 12.5})
    atoms = first.atoms.with_features(intensity=np.linspace(0, 1, len(first.atoms)),
                                      label=np.array(["core"] * len(first.atoms), object))
    edits = [{"action": "delete", "index": 4, "position": [1.0, 2.0, 3.0], "time": "2026-01-01T00:00:00"},
             {"action": "set_element", "index": 7, "from": "Fe", "to": "Pt"}]
    return Project([
        TimePoint("t0 (0 s)", raw, aligned, rec, atoms, {"align": {"max_shift": 5}, "elements": ["Fe", "Pt"]},
                  {"n_atoms": len(atoms), "fsc": np.linspace(1, 0, 5)}, edits, traced=first.atoms),
        TimePoint("t1 (annealed)", second.tilt_series, parameters={"note": "ünïcode ok"}),
    ], provenance(command="napari-aet run data.mrc --elements Fe,Pt"))


def assert_series_equal(a, b):
    np.testing.assert_array_equal(a.projections, b.projections)
    np.testing.assert_array_equal(a.angles, b.angles)
    np.testing.assert_array_equal(a.shifts, b.shifts)
    assert (a.pixel_size, a.tilt_axis, a.metadata) == (b.pixel_size, b.tilt_axis, b.metadata)


def test_round_trip(tmp_path, project):
    path = save_project(tmp_path / "run.aet", project)
    back = load_project(path)
    assert back.provenance == project.provenance
    assert [p.name for p in back.time_points] == ["t0 (0 s)", "t1 (annealed)"]
    saved, loaded = project.time_points[0], back.time_points[0]
    assert_series_equal(loaded.raw, saved.raw)
    assert_series_equal(loaded.aligned, saved.aligned)
    np.testing.assert_array_equal(loaded.reconstruction.volume, saved.reconstruction.volume)
    assert loaded.reconstruction.voxel_size == saved.reconstruction.voxel_size
    assert loaded.reconstruction.method == "resire"
    assert loaded.reconstruction.parameters == {"iterations": 50, "step": 0.5, "support": None}
    assert loaded.reconstruction.errors == saved.reconstruction.errors
    assert loaded.reconstruction.metadata == {"seconds": 12.5}
    np.testing.assert_array_equal(loaded.atoms.positions, saved.atoms.positions)
    np.testing.assert_array_equal(loaded.atoms.species, saved.atoms.species)
    assert list(loaded.atoms.features) == list(saved.atoms.features)
    for name, column in saved.atoms.features.items():
        np.testing.assert_array_equal(loaded.atoms.features[name], column)
        assert loaded.atoms.features[name].dtype.kind == column.dtype.kind
    np.testing.assert_array_equal(loaded.traced.positions, saved.traced.positions)
    assert loaded.edits == saved.edits
    assert loaded.parameters == saved.parameters
    assert loaded.report == {"n_atoms": len(saved.atoms), "fsc": [1.0, 0.75, 0.5, 0.25, 0.0]}
    second = back.time_points[1]
    assert_series_equal(second.raw, project.time_points[1].raw)
    assert (second.aligned, second.reconstruction, second.atoms, second.traced, second.edits) == (None,) * 4 + ([],)
    assert second.parameters == {"note": "ünïcode ok"}


def test_provenance_records_versions():
    record = provenance(command="napari-aet run x.mrc")
    assert record["command"] == "napari-aet run x.mrc" and record["package"] == "napari-aet"
    assert record["numpy"] == np.__version__ and record["date"].endswith("+00:00")
    assert Project().provenance["version"] == record["version"]


def test_layout_is_plain_hdf5(tmp_path, project):
    """Other tools can read a project with h5py alone."""
    save_project(tmp_path / "run.aet", project)
    with h5py.File(tmp_path / "run.aet", "r") as handle:
        assert handle.attrs["format"] == "napari-aet project"
        assert list(handle["time_points"]) == ["0000", "0001"]
        group = handle["time_points/0000"]
        assert set(group) == {"raw", "aligned", "reconstruction", "atoms", "traced"}
        assert group["reconstruction/volume"].shape == (64, 64, 64)
        assert group["atoms/positions"].shape == (len(project.time_points[0].atoms), 3)


def test_empty_atom_model(tmp_path, project):
    empty = project.time_points[0].atoms.subset(np.zeros(len(project.time_points[0].atoms), bool))
    save_project(tmp_path / "e.aet", Project([TimePoint("empty", atoms=empty)]))
    assert len(load_project(tmp_path / "e.aet").time_points[0].atoms) == 0


def test_bad_project_files(tmp_path, project):
    (tmp_path / "text.aet").write_text("not hdf5")
    with pytest.raises(InputError, match="cannot read text.aet: it is not an HDF5 file"):
        load_project(tmp_path / "text.aet")
    with h5py.File(tmp_path / "other.aet", "w") as handle:
        handle["x"] = 1
    with pytest.raises(InputError, match="other.aet is an HDF5 file but not a napari-aet project"):
        load_project(tmp_path / "other.aet")
    with pytest.raises(InputError, match="does not exist"):
        load_project(tmp_path / "missing.aet")
    with pytest.raises(InputError, match=r"unknown extension \.h5, expected one of \.aet"):
        save_project(tmp_path / "run.h5", project)
    with pytest.raises(InputError, match="directory .*nowhere does not exist"):
        save_project(tmp_path / "nowhere" / "run.aet", project)


def test_unsavable_value_leaves_no_file(tmp_path, project):
    bad = Project([TimePoint("t", parameters={"callback": print})], project.provenance)
    with pytest.raises(InputError, match="cannot store builtin_function_or_method in a project file"):
        save_project(tmp_path / "bad.aet", bad)
    assert list(tmp_path.iterdir()) == []
