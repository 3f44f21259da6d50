"""File-system helpers shared by the readers and writers: checked paths, atomic writes, digests."""

from __future__ import annotations

import hashlib
import os
import secrets
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


def file_sha256(path) -> str:
    """The SHA-256 of the file ``path``'s bytes, as hex: its identity whatever its file times."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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

    If writing fails, ``path`` stays as it was (absent, or the previous file) and the
    temporary file is removed, so a half-written file never looks like a result. The
    temporary path keeps the extension; the file gets the usual umask permissions.
    """
    path = Path(path).expanduser()
    directory = path.parent
    if not directory.is_dir():
        raise InputError(f"cannot write {path}: directory {directory} does not exist")
    temporary = directory / f".{path.stem}.{secrets.token_hex(4)}.part{path.suffix}"
    try:
        temporary.touch(exist_ok=False)  # unlike mkstemp, honours the umask, so results stay readable
    except OSError as exc:
        raise InputError(f"cannot write {path}: directory {directory} is not writable "
                         f"({exc.strerror})") from exc
    try:
        yield temporary
        os.replace(temporary, path)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        temporary.unlink(missing_ok=True)
