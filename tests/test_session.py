"""The study session: autosaves that survive a killed process, and recovery on opening."""

import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from napari_aet.edit import relabel
from napari_aet.model import AtomModel, InputError
from napari_aet.project import Project, TimePoint, save_project
from napari_aet.session import StudySession, autosave_folder, autosave_paths


@pytest.fixture
def study_file(tmp_path):
    atoms = AtomModel(np.arange(12.0).reshape(4, 3), np.array(["Fe", "Pt", "Pt", "Fe"], dtype=object))
    point = TimePoint("9 min", atoms=atoms, time=9.0, stages={"trace": {"status": "done", "parameters": {},
                                                                       "provenance": {}}})
    return save_project(tmp_path / "particle.aet", Project([point]))


def test_an_edit_survives_kill_9(study_file):
    """A process that edits the atoms and is then killed with SIGKILL loses nothing."""
    script = textwrap.dedent(f"""
        import os, signal
        from napari_aet.edit import relabel
        from napari_aet.session import StudySession
        session = StudySession.open({str(study_file)!r})
        point = session.point
        point.atoms = relabel(point.atoms, [0], "Pt")
        point.edits.append({{"action": "relabel", "index": 0, "old": "Fe", "new": "Pt"}})
        session.edited()
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    process = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert process.returncode == -9, process.stderr
    for opened in (study_file, autosave_paths(study_file)[1]):  # the study, or its autosave: the same
        session = StudySession.open(opened)
        assert session.recovered and session.path == study_file
        assert session.point.atoms.species[0] == "Pt" and session.point.atoms.features["locked"][0]
        assert session.point.edits == [{"action": "relabel", "index": 0, "old": "Fe", "new": "Pt"}]
    os.utime(autosave_paths(study_file)[1], (1e9, 1e9))  # older than the study, as `cp -r` may leave it
    session = StudySession.open(study_file)
    assert session.recovered and session.point.edits[0]["action"] == "relabel"


def test_saving_folds_the_autosaves_in(study_file):
    session = StudySession.open(study_file)
    session.point.atoms = relabel(session.point.atoms, [1], "Fe")
    session.edited()
    assert session.edits_path.exists()
    session.save()
    assert not session.edits_path.exists()
    reopened = StudySession.open(study_file)
    assert not reopened.recovered and reopened.point.atoms.species[1] == "Fe"


def test_edits_made_on_other_results_are_not_mixed_in(study_file):
    session = StudySession.open(study_file)
    session.point.atoms = relabel(session.point.atoms, [2], "Fe")
    session.point.stages["trace"]["parameters"] = {"min_distance": 2.5}  # traced again, differently
    session.edited()
    reopened = StudySession.open(study_file)
    assert not reopened.recovered and reopened.point.atoms.species[2] == "Pt"


def test_time_points_and_autosave_names(tmp_path):
    session = StudySession()
    session.add_time_point("16 min", time=16.0)
    assert session.index == 1 and session.point.time == 16.0
    with pytest.raises(InputError, match="already has a time point"):
        session.add_time_point("16 min")
    with pytest.raises(InputError, match="not been saved"):
        session.save()
    assert [p.name for p in autosave_paths(tmp_path / "a.aet")] == ["a.autosave.aet", "a.edits.aet"]
    for missing in ("a.aet", "a.edits.aet", "a.autosave.aet"):
        with pytest.raises(InputError, match="a.aet does not exist, nor any autosave of it"):
            StudySession.open(tmp_path / missing)


def test_data_entered_for_a_study_never_saved_are_autosaved():
    """The Data step's series is the study's first work: autosaved at once (Open… of another
    study then lost it)."""
    from napari_aet.model import TiltSeries

    session = StudySession()
    series = TiltSeries(np.random.default_rng(0).random((8, 16, 16), np.float32), np.linspace(-60, 60, 8), 0.4)
    session.set_raw(series)
    assert session.autosave_path.exists()
    recovered = StudySession.open(session.autosave_path)
    np.testing.assert_array_equal(recovered.point.raw.projections, series.projections)


def test_the_autosave_of_a_study_never_saved_is_recovered_and_saving_removes_it(study_file):
    """After a crash, opening either autosave of a study never saved brings back the study and the
    hand edits made after its last stage; it stays unsaved, autosaving to the same files, until
    saved under a name."""
    session = StudySession(StudySession.open(study_file).study)
    assert session.path is None and session.autosave_path.parent == autosave_folder()
    session.add_time_point("16 min")
    save_project(session.autosave_path, session.study)  # the whole study, as autosaved after a stage ...
    session.select(0)
    session.point.atoms = relabel(session.point.atoms, [0], "Pt")
    session.edited()  # ... then a hand edit
    autosaves = (session.autosave_path, session.edits_path)
    del session  # napari crashed

    for opened in autosaves:
        recovered = StudySession.open(opened)
        assert recovered.path is None and recovered.recovered
        assert (recovered.autosave_path, recovered.edits_path) == autosaves
        assert [p.name for p in recovered.study.time_points] == ["9 min", "16 min"]
        assert recovered.point.atoms.species[0] == "Pt"
    with pytest.raises(InputError, match="not been saved"):
        recovered.save()
    saved = recovered.save(study_file.with_name("recovered.aet"))
    assert not any(path.exists() for path in autosaves)
    assert recovered.path == saved and recovered.autosave_path.parent == saved.parent
    assert StudySession.open(saved).point.atoms.species[0] == "Pt"


def test_the_autosave_folder_is_set_by_the_environment_and_old_autosaves_are_pruned(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_AET_AUTOSAVE_DIR", str(tmp_path / "autosaves"))
    assert autosave_folder() == tmp_path / "autosaves" and autosave_folder().is_dir()
    month_ago = time.time() - 31 * 86400
    old, recent, mine = (tmp_path / "autosaves" / name for name in (
        "study-0ld.edits.aet", "study-recent.autosave.aet", "notes.autosave.aet"))
    for path in (old, recent, mine):
        save_project(path, Project([TimePoint("t0")]))
    for path in (old, mine):
        os.utime(path, (month_ago, month_ago))
    session = StudySession()  # a session starting prunes what is 30 days old
    assert session.autosave_path.parent == tmp_path / "autosaves"
    assert not old.exists() and recent.exists() and mine.exists()  # only autosaves of studies never saved
