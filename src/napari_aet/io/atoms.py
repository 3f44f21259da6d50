"""Atom tables: CSV (``x,y,z,element`` then per-atom columns) and extended XYZ.

Positions are (x, y, z) in Å in the specimen frame with the origin at the rotation
centre. In XYZ files an unclassified atom ("" in napari-aet) is written as the dummy
symbol ``X`` (ASE's convention) and read back as "".
"""

from __future__ import annotations

import csv
import io
import shlex
from pathlib import Path

import numpy as np
import pandas as pd

from ..model import AtomModel, InputError
from .files import atomic_write, existing_file, suffix_of

EXTENSIONS = {".csv", ".xyz"}
UNCLASSIFIED = "X"
#: Empty text in an extended-XYZ text column (a space is written as "_").
EMPTY_TEXT = "-"
#: extended-XYZ property types by numpy dtype kind, and back.
XYZ_TYPES = {"b": "L", "i": "I", "u": "I", "f": "R"}
LOGICAL = {"T": True, "F": False, "TRUE": True, "FALSE": False, "1": True, "0": False}


def _model(frame: pd.DataFrame, name: str) -> AtomModel:
    frame = frame.rename(columns={c: c.strip().lower() for c in frame.columns
                                  if c.strip().lower() in ("x", "y", "z", "element")})
    try:
        if "element" in frame:
            frame["element"] = frame["element"].fillna("").astype(str).str.strip()
        return AtomModel.from_frame(frame)
    except InputError as exc:
        raise InputError(f"{name}: {exc}") from None
    except (TypeError, ValueError):
        raise InputError(f"{name}: the x, y, z columns must hold numbers (Å)") from None


def _read_csv(path: Path) -> AtomModel:
    try:
        frame = pd.read_csv(path, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path.name} as a CSV table ({str(exc).strip()[:120]}): expected "
                         "a header line x,y,z,element and one atom per line") from None
    for name in frame.columns:  # an empty cell of a text column is empty text, not NaN
        if not pd.api.types.is_numeric_dtype(frame[name]) and not pd.api.types.is_bool_dtype(frame[name]):
            frame[name] = frame[name].fillna("")
    return _model(frame, path.name)


def _xyz_columns(comment: str):
    """Column names and types from an extended-XYZ comment line (plain XYZ: element x y z)."""
    fields = dict(item.split("=", 1) for item in shlex.split(comment, posix=True) if "=" in item)
    spec = fields.get("Properties", fields.get("properties"))
    if spec is None:
        return ["element", "x", "y", "z"], ["S", "R", "R", "R"]
    parts = spec.split(":")
    names, types = [], []
    for name, kind, count in zip(parts[::3], parts[1::3], map(int, parts[2::3])):
        if name == "pos":
            names += ["x", "y", "z"]
        elif name == "species":
            names.append("element")
        else:
            names += [name] if count == 1 else [f"{name}_{i}" for i in range(count)]
        types += [kind.upper()] * count
    return names, types


def _read_xyz(path: Path) -> AtomModel:
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    try:
        n = int(lines[0].strip())
        names, types = _xyz_columns(lines[1] if len(lines) > 1 else "")
    except (IndexError, ValueError):
        raise InputError(f"{path.name} is not an XYZ file: expected the atom count on line 1, a comment "
                         "line, then one atom per line") from None
    rows = lines[2:2 + n]
    if len(rows) < n:
        raise InputError(f"{path.name} announces {n} atoms but holds {len(rows)} atom lines")
    frame = pd.read_csv(io.StringIO("\n".join(rows)), sep=r"\s+", header=None, dtype=str,
                        names=range(len(names)), usecols=range(len(names)), keep_default_na=False)
    for column, (name, kind) in enumerate(zip(names, types)):
        values = frame[column]
        try:
            frame[column] = (values.str.upper().map(LOGICAL) if kind == "L" else
                             values.astype(np.float64) if kind == "R" else  # "nan" too
                             pd.to_numeric(values) if kind == "I" else
                             values.str.replace("_", " ").replace(EMPTY_TEXT, ""))
        except ValueError:
            raise InputError(f"{path.name}: column {name!r} holds a value that is not a number") from None
    frame.columns = names
    if "element" in frame:
        frame["element"] = frame["element"].replace(UNCLASSIFIED, "")
    return _model(frame, path.name)


def read_atoms(path) -> AtomModel:
    """Read atoms from ``.csv`` (columns x, y, z in Å, optional element, then per-atom
    columns) or ``.xyz`` (extended XYZ with a ``Properties=`` line, or plain XYZ)."""
    path = existing_file(path)
    return _read_csv(path) if suffix_of(path, EXTENSIONS, "an atom table") == ".csv" else _read_xyz(path)


def _xyz_text(atoms: AtomModel) -> str:
    frame = atoms.to_frame()
    frame["element"] = frame["element"].replace("", UNCLASSIFIED)
    properties = ["species:S:1", "pos:R:3"]
    for name in frame.columns[4:]:
        kind = XYZ_TYPES.get(frame[name].dtype.kind, "S")
        if kind == "L":
            frame[name] = np.where(frame[name], "T", "F")
        elif kind == "S":  # XYZ splits on white space: a space is written _, empty text -
            text = frame[name].astype(str)
            if text.str.contains(r"[_\t\n\r]|^-$").any():
                raise InputError(f"per-atom column {name!r} holds text with an underscore, a tab or a line "
                                 "break, or a lone '-', which XYZ cannot store unchanged: save as CSV instead")
            frame[name] = text.str.replace(" ", "_").replace("", EMPTY_TEXT)
        properties.append(f"{name}:{kind}:1")
    frame = frame[["element", "x", "y", "z", *frame.columns[4:]]]
    header = (f"{len(frame)}\nProperties={':'.join(properties)} pbc=\"F F F\" "
              "units=angstrom origin=rotation_centre\n")
    return header + frame.to_csv(sep=" ", header=False, index=False, quoting=csv.QUOTE_NONE, na_rep="nan",
                                 lineterminator="\n")  # an empty field would shift the columns after it


def write_atoms(path, atoms: AtomModel) -> Path:
    """Write atoms atomically as ``.csv`` (x,y,z,element then per-atom columns) or extended
    ``.xyz`` (species, pos, then per-atom columns; pbc F F F). Returns the path."""
    path = Path(path)
    suffix = suffix_of(path, EXTENSIONS, "an atom table")
    text = atoms.to_frame().to_csv(index=False, lineterminator="\n") if suffix == ".csv" else _xyz_text(atoms)
    with atomic_write(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return path
