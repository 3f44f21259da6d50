"""napari layers of a batch study: each particle's time points stacked on a leading time axis.

A batch directory (``napari-aet batch --out DIR``) or one particle's ``study.aet`` opens as, per
particle, a reconstruction Image layer ``(time, z, y, x)`` and an atoms Points layer whose points
are ``(time, z, y, x)`` (voxels; ``scale`` makes the viewer show Å), both named
"<particle>: …" so that each particle's layers sit together; the atoms' ``features["time"]``
holds each atom's time label and ``metadata["aet"]["times"]`` the labels in order. The time
slider of napari then steps through the annealing times.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import layers
from ..model import InputError
from ..project import Project, TimePoint, load_project

#: Points-layer keyword arguments that hold one value per atom.
PER_ATOM = ("shown", "size", "face_color", "border_color", "border_width")
AXIS_LABELS = ("time", "z", "y", "x")


def study_particle(project: Project) -> str | None:
    """The particle a project is the study of (set by ``napari-aet batch``), else None."""
    return project.provenance.get("particle")


def is_study_directory(path) -> bool:
    """Whether ``path`` is a batch study directory: it holds ``summary.csv`` and
    ``<particle>/study.aet`` files."""
    path = Path(path)
    return (path / "summary.csv").is_file() and any(path.glob("*/study.aet"))


def _with_time(kwargs):
    """Layer keyword arguments of a 3D layer, for the same layer with a leading time axis."""
    return {**kwargs, "scale": (1.0, *kwargs["scale"]), "translate": (0.0, *kwargs["translate"]),
            "axis_labels": AXIS_LABELS}


def _volume_layers(particle, points: list[TimePoint]) -> list[tuple]:
    """One ``(time, z, y, x)`` Image layer if every volume has the same shape, else one per time."""
    volumes = [layers.volume_layer(p.reconstruction, name=f"{particle} {p.name}: reconstruction") for p in points]
    if len({data.shape for data, _, _ in volumes}) != 1:
        return volumes
    data, kwargs, kind = volumes[0]
    kwargs = _with_time(kwargs)
    kwargs["name"] = f"{particle}: reconstruction"
    kwargs["metadata"]["aet"].update(kind="volume_over_time", times=[p.name for p in points])
    return [(np.stack([d for d, _, _ in volumes]), kwargs, kind)]


def _atoms_layer(particle, points: list[TimePoint]) -> tuple:
    """One Points layer ``(time, z, y, x)`` of every time's atoms, on the first time's voxel grid."""
    import pandas as pd

    reference = points[0].reconstruction
    per_time = [layers.atoms_layer(p.atoms, reference.volume.shape, reference.voxel_size) for p in points]
    data = np.concatenate([np.column_stack([np.full(len(d), float(t)), d]).reshape(-1, 4)
                           for t, (d, _, _) in enumerate(per_time)])
    features = pd.concat([k["features"].assign(time=p.name) for p, (_, k, _) in zip(points, per_time)],
                         ignore_index=True)
    kwargs = _with_time(per_time[0][1])
    kwargs.update({key: np.concatenate([k[key] for _, k, _ in per_time]) for key in PER_ATOM},
                  name=f"{particle}: atoms", features=features)
    kwargs["metadata"]["aet"].update(kind="atoms_over_time", times=[p.name for p in points],
                                     edits={p.name: p.edits for p in points if p.edits})
    return data, kwargs, "points"


def particle_layers(particle: str, points: list[TimePoint]) -> list[tuple]:
    """Layer data tuples of one particle's time points (in time order): volumes, then atoms."""
    missing = [p.name for p in points if p.reconstruction is None or p.atoms is None]
    if missing:
        raise InputError(f"particle {particle}: time point(s) {', '.join(missing)} hold no reconstruction "
                         "or atoms: run them first (napari-aet batch)")
    return [*_volume_layers(particle, points), _atoms_layer(particle, points)]


def study_directory_layers(path) -> list[tuple]:
    """Layer data tuples of every particle of a batch study directory, particle by particle."""
    path = Path(path)
    studies = sorted(path.glob("*/study.aet"))
    if not studies:
        raise InputError(f"{path} holds no <particle>/study.aet: expected the --out directory of napari-aet batch")
    return [layer for study in studies for layer in particle_layers(study.parent.name,
                                                                    load_project(study).time_points)]
