"""What a failed ``napari-aet`` command leaves on stderr, for the tests of its error messages."""

import re

PROGRESS_LINE = re.compile(r"^\[ *\d+%\] ")


def error_line(capsys) -> str:
    """The command's error: one line starting "napari-aet: error:", the last on stderr, with
    nothing before it but progress lines (no traceback, no library logging)."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and lines[-1].startswith("napari-aet: error:"), lines
    assert all(PROGRESS_LINE.match(line) for line in lines[:-1]), lines
    return lines[-1]
