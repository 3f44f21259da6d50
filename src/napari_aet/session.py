"""A study being worked on (Qt-free): the study, its current time point, where it is saved, and
an autosave of the hand edits that survives a crash.

The napari widgets share one :class:`StudySession` per viewer; scripts may use one too. Stages run
through :meth:`StudySession.run` (:func:`napari_aet.workflow.run_stage` on the current time
point), and every change is announced on :attr:`StudySession.changed` with the stage's name
("edit" for hand edits, "study" when the study itself was replaced).

Two autosaves sit next to the study file (for a study never saved, in :func:`autosave_folder`),
each written atomically: after every stage the whole study (``<study>.autosave.aet``),
and after every hand edit only what a person made — per time point its atoms, edit log, undo
history, stage records and time (``<study>.edits.aet``), small enough to write after each edit. Opening a study
takes the newest of the study and its autosave, then the hand edits saved after it, so a killed
napari loses at most the edit in flight; opening the autosave of a study never saved recovers it.
Autosaves of studies never saved that were not written for :data:`PRUNE_AFTER_DAYS` days are
removed when a session starts.
"""

from __future__ import annotations

import os
import time
import uuid
from contextlib import suppress
from pathlib import Path

from psygnal import Signal

from . import workflow
from .model import InputError, TiltSeries
from .project import Project, TimePoint, load_project, save_project

#: Environment variable that sets the folder of the autosaves of studies never saved.
AUTOSAVE_DIR_VARIABLE = "NAPARI_AET_AUTOSAVE_DIR"
#: Autosaves of studies never saved that were not written for this many days are removed.
PRUNE_AFTER_DAYS = 30
_AUTOSAVE_SUFFIXES = (".autosave.aet", ".edits.aet")


def autosave_folder() -> Path:
    """The folder of the autosaves of studies never saved (made if missing): the environment
    variable ``NAPARI_AET_AUTOSAVE_DIR`` if set, else ``autosave`` in the user's data directory."""
    folder = os.environ.get(AUTOSAVE_DIR_VARIABLE)
    if not folder:
        from platformdirs import user_data_dir

        folder = Path(user_data_dir("napari-aet")) / "autosave"
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def prune_autosaves(days: float = PRUNE_AFTER_DAYS):
    """Remove the autosaves of studies never saved (``study-*`` in :func:`autosave_folder`) not
    written for ``days`` days."""
    oldest = time.time() - days * 86400
    for path in autosave_folder().glob("study-*.aet"):
        with suppress(FileNotFoundError):  # another napari may prune at the same time
            if path.name.endswith(_AUTOSAVE_SUFFIXES) and path.stat().st_mtime < oldest:
                path.unlink()


def unsaved_autosave(days: float = 7.0, besides: tuple[Path, ...] = ()) -> Path | None:
    """The newest autosave of a study never saved (``study-*`` in :func:`autosave_folder`) written
    in the last ``days`` days, other than ``besides`` (the current session's own), or None: the
    work of a napari that closed or crashed before its study was saved."""
    newest = time.time() - days * 86400
    found = [path for path in autosave_folder().glob("study-*.aet")
             if path.name.endswith(_AUTOSAVE_SUFFIXES) and path not in besides and path.stat().st_mtime >= newest]
    return max(found, key=lambda path: path.stat().st_mtime, default=None)


def autosave_paths(path: Path | None) -> tuple[Path, Path]:
    """The (whole-study, hand-edits) autosave files of the study saved at ``path`` (fresh ones in
    :func:`autosave_folder` for a study never saved)."""
    if path is None:
        path = autosave_folder() / f"study-{uuid.uuid4().hex[:12]}.aet"
    stem = path.name.removesuffix(".aet")
    return path.with_name(f"{stem}.autosave.aet"), path.with_name(f"{stem}.edits.aet")


def _study_of(path: Path) -> Path:
    """The study file whose autosave is ``path`` (``path`` itself if it is no autosave)."""
    for suffix in _AUTOSAVE_SUFFIXES:
        if path.name.endswith(suffix):
            return path.with_name(path.name.removesuffix(suffix) + ".aet")
    return path


def _newer(path: Path, than: Path) -> bool:
    """Whether ``path`` exists and was written no earlier than ``than`` (or ``than`` is missing)."""
    return path.exists() and (not than.exists() or path.stat().st_mtime_ns >= than.stat().st_mtime_ns)


def _hand_made(point: TimePoint) -> TimePoint:
    """The part of a time point a person made: atoms, edit log, undo history, stage records, time."""
    return TimePoint(point.name, atoms=point.atoms, edits=point.edits, stages=point.stages, time=point.time,
                     undo_history=point.undo_history)


class StudySession:
    """One study, its current time point and its files.

    study : the :class:`~napari_aet.project.Project`; path : where it is saved (None until then).
    """

    changed = Signal(str)

    def __init__(self, study: Project | None = None, path=None):
        self.id = uuid.uuid4().hex  # tells this session's layers from layers of other studies
        prune_autosaves()
        self._set(study if study is not None else Project([TimePoint("t0")]), path)

    def _set(self, study: Project, path, autosaves: tuple[Path, Path] | None = None):
        if not study.time_points:
            raise InputError("a study needs at least one time point")
        self.study, self.index = study, 0
        self.recovered = False  # whether opening restored work from an autosave
        self.path = None if path is None else Path(path)
        self.autosave_path, self.edits_path = autosaves or autosave_paths(self.path)

    @property
    def point(self) -> TimePoint:
        """The current time point."""
        return self.study.time_points[self.index]

    def select(self, index: int):
        """Make time point ``index`` current."""
        if not 0 <= index < len(self.study.time_points):
            raise InputError(f"the study has {len(self.study.time_points)} time point(s), no {index}")
        self.index = index
        self.changed.emit("study")

    def add_time_point(self, name: str, time: float | None = None) -> TimePoint:
        """Append an empty time point and make it current."""
        if any(p.name == name for p in self.study.time_points):
            raise InputError(f"the study already has a time point named {name!r}")
        self.study.time_points.append(TimePoint(name, time=time))
        self.select(len(self.study.time_points) - 1)
        return self.point

    def set_raw(self, series: TiltSeries):
        """Make ``series`` the current time point's data (autosaved); every stage that ran becomes stale."""
        self.point.raw = series
        workflow.mark_stale_from(self.point, workflow.STAGES[0])
        save_project(self.autosave_path, self.study)
        self.changed.emit("raw")

    def run(self, stage: str, *args, progress=None, **options):
        """:func:`napari_aet.workflow.run_stage` on the current time point, then the whole-study
        autosave (call from a worker thread, one stage at a time). Announce the change with
        :meth:`announce` from the GUI thread."""
        result = workflow.run_stage(self.point, stage, *args, progress=progress, **options)
        save_project(self.autosave_path, self.study)
        return result

    def announce(self, what: str):
        """Tell the listeners that ``what`` (a stage, "edit", "study") changed."""
        self.changed.emit(what)

    def edited(self):
        """Call after each hand edit of the current atoms: saves the hand edits and announces them."""
        save_project(self.edits_path, Project([_hand_made(p) for p in self.study.time_points]))
        self.changed.emit("edit")

    def save(self, path=None) -> Path:
        """Save the whole study (to ``path``, or where it was saved before); the autosave is then
        up to date with it and is removed."""
        if path is None and self.path is None:
            raise InputError("the study has not been saved yet: give a file name (.aet)")
        target = Path(path) if path is not None else self.path
        save_project(target, self.study)
        for old in (self.autosave_path, self.edits_path):
            old.unlink(missing_ok=True)
        self.path = target
        self.autosave_path, self.edits_path = autosave_paths(target)
        return target

    @classmethod
    def open(cls, path) -> StudySession:
        """A session on a saved study (see :meth:`load`)."""
        session = cls()
        session.load(path)
        return session

    def load(self, path):
        """Work on the study saved at ``path`` from now on, with its whole-study autosave when that
        is newer and the unsaved hand edits of its edits autosave whatever that file's time (the
        time points whose stage records match; ``recovered`` says whether the autosaves held
        any), under a new :attr:`id`; announces "study".

        ``path`` may be an autosave (``<study>.autosave.aet``, ``<study>.edits.aet``): its study
        ``<study>.aet`` is opened. A study never saved (no ``<study>.aet``) is recovered from its
        autosaves alone: it stays unsaved (``path`` None) and keeps autosaving to them."""
        path = _study_of(Path(path).expanduser())
        autosave, edits = autosave_paths(path)
        source = autosave if _newer(autosave, path) else path
        if not source.exists():
            source = edits  # only hand edits were autosaved
        if not source.exists():
            raise InputError(f"file {path} does not exist, nor any autosave of it: check the name and directory")
        study = load_project(source)
        recovered = source != path
        self.id = uuid.uuid4().hex  # the layers of the study worked on before are not this one's
        self._set(study, path if path.exists() else None, (autosave, edits))
        if edits.exists() and edits != source:  # unsaved hand edits (Save removes the file), whatever its
            recovered |= self.recover(load_project(edits))  # time: `cp -r` may leave it older than the study
        self.recovered = recovered
        self.changed.emit("study")

    def recover(self, hand_made: Project) -> bool:
        """Put the atoms, edit logs and undo histories of ``hand_made`` into the time points of the
        same name whose stage records match (the edits were made on those results). Returns
        whether any was."""
        by_name = {p.name: p for p in hand_made.time_points}
        recovered = False
        for point in self.study.time_points:
            saved = by_name.get(point.name)
            if saved is not None and saved.stages == point.stages:
                point.atoms, point.edits, point.undo_history = saved.atoms, saved.edits, saved.undo_history
                recovered = True
        return recovered
