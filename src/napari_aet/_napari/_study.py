"""The study session of a napari viewer: every napari-aet widget docked in one viewer shares it."""

from __future__ import annotations

import weakref

from ..session import StudySession

_SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def session_for(viewer) -> StudySession:
    """The :class:`~napari_aet.session.StudySession` of ``viewer`` (made on first use).

    Docked widgets receive napari's public-only proxy of the viewer; the session is kept per
    viewer behind it, and lives as long as that viewer.
    """
    viewer = getattr(viewer, "__wrapped__", viewer)
    session = _SESSIONS.get(viewer)
    if session is None:
        session = _SESSIONS[viewer] = StudySession()
    return session


def set_session(viewer, session: StudySession):
    """Make ``session`` the study of ``viewer`` (e.g. after opening a study file)."""
    _SESSIONS[getattr(viewer, "__wrapped__", viewer)] = session
