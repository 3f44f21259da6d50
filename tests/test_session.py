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
    session = StudySession.open(study_file)
    assert session.recovered
    assert session.point.atoms.species[0] == "Pt" and session.point.atoms.features["locked"][0]
    assert session.point.edits == [{"action": "relabel", "index": 0, "old": "Fe", "new": "Pt"}]


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
    with pytest.raises(InputError, match="is an autosave"):
        StudySession.open(tmp_path / "a.edits.aet")


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
