"""4D: registration without a guess, site tracking and nucleus events across annealing times."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from napari_aet.analysis.analyze import analyze_atoms
from napari_aet.analysis.lattice import fit_lattice
from napari_aet.analysis.registration import RigidTransform, register_atoms
from napari_aet.analysis.tracking import SiteTracks, track_nuclei, track_sites
from napari_aet.model import AtomModel
from napari_aet.analysis.timeseries import atoms_nucleus_tracks, follow_particle
from napari_aet.simulate_alloy import SCENARIO_EVENTS, annealing_series


@pytest.fixture(scope="module")
def series():
    times = annealing_series(seed=2)
    return times, [analyze_atoms(atoms) for atoms in times]


@pytest.mark.parametrize("euler", [(40, 70, -20), (170, 95, 110)])
def test_pure_rotation_is_recovered(series, euler):
    atoms, analysis = series[0][0], series[1][0]
    rotation = Rotation.from_euler("zyz", euler, degrees=True).as_matrix()
    moved = AtomModel(atoms.positions @ rotation.T + [3.0, -2.0, 1.5], atoms.species)
    transform = register_atoms(*[moved, atoms], fit_lattice(moved)[1], analysis.lattice)
    error = Rotation.from_matrix(transform.rotation @ rotation).magnitude()
    assert np.degrees(error) < 0.1 and transform.residual < 1e-6 and transform.matched_fraction == 1


def test_sites_and_nucleus_events_across_times(series):
    times, analyses = series
    transforms = [register_atoms(a.atoms, analyses[0].atoms, a.lattice, analyses[0].lattice) for a in analyses[1:]]
    assert all(t.residual < 0.2 and t.matched_fraction > 0.98 for t in transforms)
    transforms.insert(0, RigidTransform(np.eye(3), np.zeros(3)))
    tracks = track_sites([t.apply(a.atoms.positions) for t, a in zip(transforms, analyses)],
                         max_distance=0.5 * analyses[0].lattice.r1)
    site = [atoms.features["site"] for atoms in times]
    for t in (1, 2):
        same_track = tracks.track[t][:, None] == tracks.track[t - 1][None, :]
        same_site = site[t][:, None] == site[t - 1][None, :]
        hits = np.count_nonzero(same_track & same_site)
        assert hits / same_track.sum() >= 0.995 and hits / same_site.sum() >= 0.995
        assert np.array_equal(tracks.appeared[t], ~np.isin(site[t], site[t - 1]))
    nuclei = track_nuclei([a.atoms.features["nucleus"] for a in analyses], tracks).to_frame()
    by_track = nuclei.groupby("nucleus_track")["event"].apply(list).to_dict()
    assert sorted(map(tuple, by_track.values())) == sorted([
        ("present", "grew", "grew"), ("present", "shrank", "shrank"), ("present", "stable", "stable"),
        ("present", "shrank", "dissolved"), ("appeared", "grew")])


def _tracks(*ids):
    return SiteTracks([np.array(i) for i in ids], [], [])


def test_merge_and_split_events():
    # time 0: nuclei 0 (atoms 0-4) and 1 (atoms 5-9); time 1: one nucleus of all; time 2: split in two
    labels = [np.repeat([0, 1], 5), np.zeros(10, int), np.r_[np.zeros(6, int), np.ones(4, int)]]
    rows = track_nuclei(labels, _tracks(*[np.arange(10)] * 3)).to_frame()
    assert list(rows[rows.time == 1].event) == ["merged", "merged"]
    assert sorted(rows[rows.time == 2].event) == ["split", "split"]
    assert rows[rows.time == 2].nucleus_track.nunique() == 2


def test_nuclei_that_only_touch_are_not_merged():
    """Two nuclei (40 and 30 atoms) whose edges meet: 3 atoms of the second are counted in the
    first at the next time. Sharing 3 of 30 atoms is no link (a user's small particle gave every
    nucleus a spurious merge); each goes on, stable."""
    labels = [np.repeat([0, 1], [40, 30]), np.repeat([0, 1], [43, 27])]
    rows = track_nuclei(labels, _tracks(np.arange(70), np.arange(70))).to_frame()
    assert list(rows[rows.time == 1].event) == ["stable", "stable"]
    assert list(rows[rows.time == 1].nucleus_track) == [0, 1]


def test_merge_and_split_of_simulated_nuclei():
    # two planted L1_0 nuclei grow into one, a planted dumbbell shrinks into two (exact atoms)
    times = annealing_series(seed=3, scenario="merge-split")
    assert [len(np.unique(t.features["true_nucleus"][t.features["true_nucleus"] >= 0])) for t in times] == [4, 4, 4]
    analyses = [analyze_atoms(atoms) for atoms in times]
    followed = follow_particle([a.atoms for a in analyses], [a.lattice for a in analyses])
    events = followed.nuclei.to_frame().groupby("nucleus_track")["event"].apply(tuple)
    assert sorted(events) == SCENARIO_EVENTS["merge-split"]
    # every atom in a nucleus carries a nucleus track; the merged nucleus, the track that continues
    tracks = atoms_nucleus_tracks(followed, [a.atoms for a in analyses])
    assert all(np.array_equal(k >= 0, a.atoms.features["nucleus"] >= 0) for k, a in zip(tracks, analyses))
    rows = followed.nuclei
    merged = (rows.time == 1) & (rows.event == "merged")
    continuing = np.intersect1d(rows.nucleus_track[merged], rows.nucleus_track[rows.time == 2])
    assert len(continuing) == 1
    assert np.all(tracks[1][analyses[1].atoms.features["nucleus"] == rows.nucleus[merged][0]] == continuing[0])
