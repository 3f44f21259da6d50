"""File-system helpers shared by the readers and writers: checked paths and atomic writes."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from ..model import InputError


def existing_file(path) -> Path:
    """``path`` as a Path, or InputError if it is missing or not a regular file."""
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"file {path} does not exist: check the name and directory")
    if not path.is_file():
        raise InputError(f"{path} is not a file: expected a data file, not a directory")
    return path


def suffix_of(path, allowed, what) -> str:
    """Lower-case extension of ``path``; InputError unless it is in ``allowed``."""
    suffix = Path(path).suffix.lower()
    if suffix not in allowed:
        raise InputError(f"cannot handle {Path(path).name} as {what}: unknown extension "
                         f"{suffix or '(none)'}, expected one of {', '.join(sorted(allowed))}")
    return suffix


@contextmanager
def atomic_write(path):
    """Yield a temporary path beside ``path``; on success move it over ``path`` with os.replace.

    Nothing is left at ``path`` (and the temporary file is removed) if writing fails, so a
    half-written file never looks like a result. The temporary path keeps the extension.
    """
    path = Path(path).expanduser()
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise InputError(f"cannot write {path}: directory {directory} does not exist")
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".part{path.suffix}",
                                             dir=directory)
    except OSError as exc:
        raise InputError(f"cannot write {path}: directory {directory} is not writable "
                         f"({exc.strerror})") from exc
    os.close(handle)
    temporary = Path(temporary)
    try:
        yield temporary
        os.replace(temporary, path)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        temporary.unlink(missing_ok=True)
