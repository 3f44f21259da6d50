"""The edit log on disk: an atoms layer saved as .aet and opened again keeps its log and locks."""

import json
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from napari_aet._napari import layers
from napari_aet.atom_labels import NON_ATOM
from napari_aet.edit import append_to_log, changes, relabel
from napari_aet.io import read_atoms
from napari_aet._napari.hooks import read_layers, write_atoms, write_project
from napari_aet.project import load_project
from napari_aet.simulate import fcc_particle

SHAPE, VOXEL = (32, 32, 32), 0.5  # the layer's grid, Å per voxel


@pytest.fixture
def edited_layer():
    """Layer data tuple "t0: atoms" after a deletion, a relabel and a move, with their log."""
    before = fcc_particle(radius=6.0, seed=2)
    kept = before.subset(np.delete(np.arange(len(before)), 5))
    log = append_to_log([], changes(before, kept, [5]))
    labelled = relabel(kept, [0, 3], NON_ATOM)
    append_to_log(log, changes(kept, labelled))
    data, attributes, kind = layers.atoms_layer(labelled, SHAPE, VOXEL, name="t0: atoms")
    attributes["metadata"]["aet"]["edits"] = log
    return data, attributes, kind


def test_saved_project_reopens_with_the_same_log_and_locks(tmp_path, edited_layer):
    data, attributes, _ = edited_layer
    path = tmp_path / "edited.aet"
    assert write_project(str(path), data, attributes) == [str(path)]
    log = attributes["metadata"]["aet"]["edits"]
    assert [e["action"] for e in log] == ["delete", "relabel", "relabel"]

    (point,) = load_project(path).time_points
    assert point.name == "t0" and point.edits == log
    with h5py.File(path) as handle:
        assert json.loads(handle["time_points/0000"].attrs["edits"]) == log

    [(back, back_attributes, kind)] = read_layers(str(path))
    assert kind == "points" and back_attributes["name"] == "t0: atoms"
    assert back_attributes["metadata"]["aet"]["edits"] == log
    saved = layers.atoms_from_layer(_layer_like(data, attributes))
    reopened = layers.atoms_from_layer(_layer_like(back, back_attributes))
    np.testing.assert_allclose(reopened.positions, saved.positions, atol=1e-9)  # Å
    np.testing.assert_array_equal(reopened.species, saved.species)
    for name in ("edited", "locked", "non_atom"):
        np.testing.assert_array_equal(reopened.features[name], saved.features[name])
    assert list(np.flatnonzero(reopened.features["locked"])) == [0, 3]


def test_a_project_without_edits_gives_no_log(tmp_path):
    atoms = fcc_particle(radius=4.0, seed=1)
    write_project(str(tmp_path / "plain.aet"), *layers.atoms_layer(atoms, SHAPE, VOXEL, name="atoms")[:2])
    [(_, attributes, _)] = read_layers(str(tmp_path / "plain.aet"))
    assert attributes["name"] == "atoms: atoms" and "edits" not in attributes["metadata"]["aet"]


def test_an_atom_table_warns_that_it_drops_the_log(tmp_path, edited_layer):
    data, attributes, _ = edited_layer
    with pytest.warns(UserWarning) as caught:
        write_atoms(str(tmp_path / "edited.csv"), data, attributes)
    said = " ".join(str(w.message) for w in caught)
    assert "not its edit log (3 entries): save the layer as .aet" in said
    assert "not its 2 non-atoms" in said  # the two relabelled as non-atoms (locked) are left out, as in atoms.csv
    table = read_atoms(tmp_path / "edited.csv")
    assert len(table) == len(data) - 2 and "locked" in table.features
    attributes["metadata"]["aet"]["edits"] = []
    with pytest.warns(UserWarning) as caught:
        write_atoms(str(tmp_path / "plain.csv"), data, attributes)
    assert "edit log" not in " ".join(str(w.message) for w in caught)


def _layer_like(data, attributes):
    """What :func:`layers.atoms_from_layer` reads from a layer: data, features, metadata, name."""
    return SimpleNamespace(data=data, features=attributes["features"], metadata=attributes["metadata"],
                           name=attributes["name"])
