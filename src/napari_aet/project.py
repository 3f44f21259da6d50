"""The study: one particle at one or more time points, every stage's result, its parameters,
provenance and status, and the hand edits; saved as one HDF5 file with the extension ``.aet``.

:class:`Project` is the study (the name of its file format); :mod:`napari_aet.workflow` runs
stages on its time points. Layout (see docs/formats.md)::

    /                    attrs format="napari-aet project", format_version, provenance (JSON)
    /time_points/NNNN    one group per time point, in order; attrs name, time (minutes, NaN if
                         unknown), parameters, report, edits, stages, undo_history (JSON)
        raw/, aligned/   projections, angles, shifts; attrs pixel_size, tilt_axis, metadata
        reconstruction/  volume; attrs voxel_size, method, parameters, errors, metadata
        atoms/, traced/, analysis/
                         positions (N, 3) Å, species; features/<column> in column order

Dicts are stored as JSON, so numpy arrays inside ``parameters``/``report``/``metadata``
come back as lists. Version-1 files (no ``time`` or ``stages``) are read with every stored
result marked done.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from . import __version__
from .io.files import atomic_write, existing_file, suffix_of
from .model import AtomModel, InputError, Reconstruction, TiltSeries, utc_now

FORMAT = "napari-aet project"
FORMAT_VERSION = 2


@dataclass
class TimePoint:
    """One particle state: its data at every stage, how they were made, and manual edits.

    atoms : the current atom model (traced, then classified, then refined), hand edits included.
    traced : the classified atoms before refinement against the projections (``atoms`` are
        the final ones); None when no refinement ran.
    analysis : the real atoms with the analysis' per-atom columns (phase, order, nucleus,
        displacement, ...); None until analysed.
    edits : log of manual changes, one dict per edit (e.g. ``{"action": "delete", ...}``).
    time : annealing (or other) time in minutes, None if not given; ``name`` is its label.
    stages : per stage of :data:`napari_aet.workflow.STAGES` that ran, ``{"status": "done" or
        "stale", "parameters": {...}, "provenance": {...}}``; see :func:`napari_aet.workflow.status`.
    undo_history : the editor's undo and redo steps on ``atoms`` and the stage records they were
        made under (:func:`napari_aet.undo.keep_history`); empty if none.
    """

    name: str
    raw: TiltSeries | None = None
    aligned: TiltSeries | None = None
    reconstruction: Reconstruction | None = None
    atoms: AtomModel | None = None
    parameters: dict = field(default_factory=dict)
    report: dict = field(default_factory=dict)
    edits: list[dict] = field(default_factory=list)
    traced: AtomModel | None = None
    time: float | None = None
    stages: dict = field(default_factory=dict)
    analysis: AtomModel | None = None
    undo_history: dict = field(default_factory=dict)


def provenance(command: str | None = None) -> dict:
    """What made a result: package and library versions, UTC date, command line, platform."""
    import scipy

    return {"package": "napari-aet", "version": __version__,
            "date": utc_now(),
            "command": " ".join(sys.argv) if command is None else command,
            "python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
            "h5py": h5py.__version__, "platform": platform.platform()}


@dataclass
class Project:
    """A run: its time points in order and its provenance."""

    time_points: list[TimePoint] = field(default_factory=list)
    provenance: dict = field(default_factory=provenance)


def _jsonable(value):
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in a project file")


def _dumps(value) -> str:
    try:
        return json.dumps(value, default=_jsonable)
    except (TypeError, ValueError) as exc:
        raise InputError(f"project holds a value that cannot be saved: {exc}") from None


def _put_tilt_series(group, series: TiltSeries):
    group.create_dataset("projections", data=series.projections)
    group.create_dataset("angles", data=series.angles)
    group.create_dataset("shifts", data=series.shifts)
    group.attrs.update(pixel_size=series.pixel_size, tilt_axis=series.tilt_axis,
                       metadata=_dumps(series.metadata))


def _get_tilt_series(group) -> TiltSeries:
    return TiltSeries(group["projections"][()], group["angles"][()], float(group.attrs["pixel_size"]),
                      float(group.attrs["tilt_axis"]), group["shifts"][()], json.loads(group.attrs["metadata"]))


def _put_reconstruction(group, reconstruction: Reconstruction):
    group.create_dataset("volume", data=reconstruction.volume)
    group.attrs.update(voxel_size=reconstruction.voxel_size, method=reconstruction.method,
                       parameters=_dumps(reconstruction.parameters), errors=_dumps(reconstruction.errors),
                       metadata=_dumps(reconstruction.metadata))


def _get_reconstruction(group) -> Reconstruction:
    a = group.attrs
    return Reconstruction(group["volume"][()], float(a["voxel_size"]), str(a["method"]),
                          json.loads(a["parameters"]), json.loads(a["errors"]), json.loads(a["metadata"]))


def _put_atoms(group, atoms: AtomModel):
    text = h5py.string_dtype()
    group.create_dataset("positions", data=atoms.positions)
    group.create_dataset("species", data=atoms.species.astype(str).astype(object), dtype=text)
    features = group.create_group("features", track_order=True)
    for name, column in atoms.features.items():
        if column.dtype.kind in "biuf":
            features.create_dataset(name, data=column)
        else:
            features.create_dataset(name, data=column.astype(str).astype(object), dtype=text)


def _get_atoms(group) -> AtomModel:
    def column(dataset):
        return dataset.asstr()[()].astype(object) if h5py.check_string_dtype(dataset.dtype) else dataset[()]

    return AtomModel(group["positions"][()], column(group["species"]),
                     {name: column(dataset) for name, dataset in group["features"].items()})


RESULT_FIELDS = {"raw": (_put_tilt_series, _get_tilt_series), "aligned": (_put_tilt_series, _get_tilt_series),
          "reconstruction": (_put_reconstruction, _get_reconstruction), "atoms": (_put_atoms, _get_atoms),
          "traced": (_put_atoms, _get_atoms), "analysis": (_put_atoms, _get_atoms)}


def _version_1_stages(point: TimePoint) -> dict:
    """The stage records of a version-1 time point: every stored result done."""
    ran = {"align": point.aligned, "reconstruct": point.reconstruction, "trace": point.atoms,
           "classify": point.atoms if point.atoms is not None and np.any(point.atoms.species != "") else None,
           "refine": point.traced}
    return {stage: {"status": "done", "parameters": {}, "provenance": {}}
            for stage, result in ran.items() if result is not None}


def save_project(path, project: Project) -> Path:
    """Write ``project`` to one HDF5 file ``path`` (extension ``.aet``), atomically."""
    path = Path(path)
    suffix_of(path, {".aet"}, "a napari-aet project")
    with atomic_write(path) as temporary, h5py.File(temporary, "w", track_order=True) as handle:
        handle.attrs.update(format=FORMAT, format_version=FORMAT_VERSION, provenance=_dumps(project.provenance))
        time_points = handle.create_group("time_points", track_order=True)
        for index, point in enumerate(project.time_points):
            group = time_points.create_group(f"{index:04d}")
            group.attrs.update(name=point.name, parameters=_dumps(point.parameters),
                               report=_dumps(point.report), edits=_dumps(point.edits),
                               time=np.nan if point.time is None else float(point.time),
                               stages=_dumps(point.stages), undo_history=_dumps(point.undo_history))
            for name, (put, _) in RESULT_FIELDS.items():
                if getattr(point, name) is not None:
                    put(group.create_group(name), getattr(point, name))
    return path


def holds_edits(path) -> bool:
    """Whether the project file ``path`` holds hand edits (a time point with a non-empty ``edits``
    log), read from the time points' attributes alone (no array is loaded)."""
    with h5py.File(existing_file(path), "r") as handle:
        return any(json.loads(group.attrs["edits"]) for group in handle["time_points"].values())


def load_project(path) -> Project:
    """Read a project written by :func:`save_project`."""
    path = existing_file(path)
    try:
        handle = h5py.File(path, "r")
    except OSError:
        raise InputError(f"cannot read {path.name}: it is not an HDF5 file, so not a napari-aet project") from None
    with handle:
        if handle.attrs.get("format") != FORMAT:
            raise InputError(f"{path.name} is an HDF5 file but not a napari-aet project")
        if int(handle.attrs["format_version"]) > FORMAT_VERSION:
            raise InputError(f"{path.name} was written by a newer napari-aet (project format "
                             f"{handle.attrs['format_version']}): update napari-aet to open it")
        points = []
        for group in handle["time_points"].values():
            a = group.attrs
            results = {name: get(group[name]) for name, (_, get) in RESULT_FIELDS.items() if name in group}
            time = float(a.get("time", np.nan))
            point = TimePoint(str(a["name"]), parameters=json.loads(a["parameters"]), report=json.loads(a["report"]),
                              edits=json.loads(a["edits"]), time=None if np.isnan(time) else time,
                              stages=json.loads(a["stages"]) if "stages" in a else {},
                              undo_history=json.loads(a.get("undo_history", "{}")), **results)
            if "stages" not in a:
                point.stages = _version_1_stages(point)
            points.append(point)
        return Project(points, json.loads(handle.attrs["provenance"]))
