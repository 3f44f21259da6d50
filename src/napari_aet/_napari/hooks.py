"""napari reader and writers (contributions in napari.yaml).

Opening a file gives layers built by :mod:`napari_aet._napari.layers`, in specimen Å:

* a tilt series -> tilt-series Image layer; without angles (no sidecar, none in the file) it
  opens all the same, flagged ``angles_unknown``, until they are entered in the Data step;
* a volume -> volume Image layer. A file is taken as a volume when it is ``.rec``, or when
  it has no angle sidecar and its header says volume (MRC ispg 1, napari-aet TIFF) or its
  3D array is cubic. ``.mat`` volumes are read in GENFIRE's [x, y, z] layout;
* ``.csv``/``.xyz`` atoms -> Points layer. No volume is known, so the layer uses 1 Å voxels
  and the smallest odd cube about the origin that encloses the atoms with one voxel to spare;
* an ``.aet`` project -> every layer of every time point; a time point's ``edits`` become its
  atoms layer's edit log, ``metadata["aet"]["edits"]``, which the Edit widget continues;
* a batch study directory, or one particle's ``study.aet`` -> per particle, its volumes and atoms
  stacked on a leading time axis (:mod:`napari_aet._napari.study_layers`).

Writers: Image layers to volume or tilt-series files; Points layers to atom tables, or to an
``.aet`` project that keeps the edit log too.

A missing pixel/voxel size does not stop napari from showing the data: 1 Å is used, a
warning says so and the layer's metadata carries ``pixel_size_unknown`` /
``voxel_size_unknown``. Every problem surfaces as one InputError sentence.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from . import layers
from ..model import AtomModel, InputError, real_atoms
from ..project import Project, TimePoint, load_project, save_project
from ..io.angles import SIDECAR_PATTERNS, SidecarConflict, find_angle_file
from ..io.arrays import READERS, read_image_file
from ..io.atoms import read_atoms
from .study_layers import is_study_directory, particle_layers, study_directory_layers, study_particle
from ..io.atoms import write_atoms as write_atom_file
from ..io.tilt_series import tilt_series_from_image, write_tilt_series
from ..io.volumes import reconstruction_from_image
from ..io.volumes import write_volume as write_volume_file

ATOM_EXTENSIONS = (".csv", ".xyz")
READABLE = {*READERS, *ATOM_EXTENSIONS, ".aet"}
TILT_SERIES_ONLY = {".st", ".ali", ".emd", ".dm3", ".dm4"}
#: Ending of the name of a project's atoms layer, after the time point's name.
ATOMS_SUFFIX = ": atoms"


def get_reader(path):
    """The napari-aet reader for ``path`` (one file of a known extension, or a batch study
    directory), else None."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    if not isinstance(path, (str, os.PathLike)):
        return None
    if Path(path).suffix.lower() not in READABLE and not is_study_directory(path):
        return None
    return read_layers


def enclosing_shape(atoms: AtomModel) -> tuple[int, int, int]:
    """Odd cube ``(n, n, n)`` of 1 Å voxels, centred on the origin, enclosing every atom."""
    half = int(np.ceil(np.abs(atoms.positions).max())) + 1 if len(atoms) else 1
    return (2 * half + 1,) * 3


def _atoms_layer(atoms, reconstruction=None, name="atoms"):
    if reconstruction is None:
        return layers.atoms_layer(atoms, enclosing_shape(atoms), 1.0, name=name)
    return layers.atoms_layer(atoms, reconstruction.volume.shape, reconstruction.voxel_size, name=name)


def _angle_file(path: Path) -> tuple[Path | None, str]:
    """The angle sidecar of ``path`` (:func:`find_angle_file`) and "", or (None, why not) when a
    ``.tlt`` and a ``.rawtlt`` beside it disagree; (None, "") when there is none."""
    try:
        return find_angle_file(path), ""
    except SidecarConflict as conflict:
        return None, str(conflict).replace("with --angles", "in the AET workbench's Data step")


def _is_volume(path: Path, image) -> bool:
    suffix = path.suffix.lower()
    if suffix == ".rec":
        return True
    if suffix in TILT_SERIES_ONLY or _angle_file(path)[0] is not None or image.data.ndim != 3:
        return False
    return image.kind == "volume" or len(set(image.data.shape)) == 1


def _warn_unknown(path: Path, what: str):
    warnings.warn(f"{path.name} has no {what} in its metadata: it is shown with 1 Å per pixel; "
                  f"set the {what} before measuring anything", stacklevel=3)


def time_point_layers(point: TimePoint) -> list[tuple]:
    """Layer data tuples of every stage a time point holds, each tagged with the time point and
    the result it shows (``metadata["aet"]["study_point"]``, ``["study_field"]``)."""
    out = []
    if point.raw is not None:
        out.append((layers.tilt_series_layer(point.raw, name=f"{point.name}: raw tilt series"), "raw"))
    if point.aligned is not None:
        out.append((layers.tilt_series_layer(point.aligned, name=f"{point.name}: aligned tilt series"), "aligned"))
    if point.reconstruction is not None:
        out.append((layers.volume_layer(point.reconstruction, name=f"{point.name}: reconstruction"),
                    "reconstruction"))
    if point.atoms is not None:
        layer = _atoms_layer(point.atoms, point.reconstruction, name=f"{point.name}{ATOMS_SUFFIX}")
        if point.edits:
            layer[1]["metadata"]["aet"]["edits"] = point.edits
        out.append((layer, "atoms"))
    for layer, field in out:
        layer[1]["metadata"]["aet"].update(study_point=point.name, study_field=field)
    return [layer for layer, _ in out]


def read_layers(path) -> list[tuple]:
    """Layer data tuples of one file (see the module docstring)."""
    path = Path(path[0] if isinstance(path, (list, tuple)) else path)
    suffix = path.suffix.lower()
    if path.is_dir():
        return study_directory_layers(path)
    if suffix == ".aet":
        project = load_project(path)
        if study_particle(project) is not None:
            return particle_layers(study_particle(project), project.time_points)
        return [layer for point in project.time_points for layer in time_point_layers(point)]
    if suffix in ATOM_EXTENSIONS:
        return [_atoms_layer(read_atoms(path), name=path.stem)]
    image = read_image_file(path)
    if _is_volume(path, image):
        layout = "genfire" if suffix == ".mat" else "zyx"
        reconstruction = reconstruction_from_image(image, path, layout=layout, missing_voxel_size=1.0)
        layer = layers.volume_layer(reconstruction, name=path.stem)
        if reconstruction.metadata.get("voxel_size_unknown"):
            _warn_unknown(path, "voxel size")
            layer[1]["metadata"]["aet"]["voxel_size_unknown"] = True
        return [layer]
    sidecar, conflict = _angle_file(path)
    angles_unknown = sidecar is None and (image.angles is None or conflict)
    placeholder = np.arange(np.shape(image.data)[0], dtype=float) if angles_unknown else sidecar
    series = tilt_series_from_image(image, path, missing_pixel_size=1.0, angles=placeholder)
    if series.metadata.get("pixel_size_unknown"):
        _warn_unknown(path, "pixel size")
    layer = layers.tilt_series_layer(series, name=path.stem)
    if angles_unknown:
        names = ", ".join(pattern.format(stem=path.stem) for pattern in SIDECAR_PATTERNS)
        warnings.warn(conflict or f"{path.name} holds no tilt angles and no angle file of its name lies beside it "
                      f"({names}): enter them, or load any angle file, in the AET workbench's Data step before "
                      "aligning", stacklevel=2)
        layer[1]["metadata"]["aet"]["angles_unknown"] = True
        if conflict:  # the Data step says why
            layer[1]["metadata"]["aet"]["angles_unknown_why"] = conflict
    return [layer]


def _layer(data, attributes) -> SimpleNamespace:
    """A stand-in for a napari layer, built from a writer's (data, attributes)."""
    data = np.asarray(data)
    return SimpleNamespace(data=data, name=attributes.get("name", "layer"),
                           metadata=attributes.get("metadata") or {},
                           scale=np.asarray(attributes.get("scale", np.ones(3)), dtype=float),
                           translate=np.asarray(attributes.get("translate", np.zeros(3)), dtype=float),
                           features=attributes.get("features"))


def write_volume(path, data, attributes) -> list[str]:
    """napari writer for Image layers: a volume to ``.mrc``/``.tif``; a napari-aet tilt-series
    layer to the same formats plus its ``.tlt``."""
    layer = _layer(data, attributes)
    if layer.metadata.get("aet", {}).get("kind") == "tilt_series":
        return [str(p) for p in write_tilt_series(path, layers.tilt_series_from_layer(layer))]
    return [str(write_volume_file(path, layers.reconstruction_from_layer(layer)))]


def _foreign_atoms(layer) -> AtomModel:
    """Atoms from any 3D Points layer: world coordinates (z, y, x) are specimen Å."""
    if layer.data.ndim != 2 or layer.data.shape[1] != 3:
        raise InputError(f"layer {layer.name!r} holds {layer.data.shape[-1]}D points: atoms need 3D "
                         "points (z, y, x)")
    world = layer.data * layer.scale[-3:] + layer.translate[-3:]
    features = layer.features.copy() if layer.features is not None else None
    species = None
    if features is not None and "element" in features:
        species = features.pop("element").fillna("").astype(str).to_numpy(object)
    columns = {} if features is None else {c: features[c].to_numpy() for c in features.columns}
    return AtomModel(world[:, ::-1], species, columns)


def _points_atoms(layer) -> AtomModel:
    """The atoms of a Points layer: a napari-aet atoms layer's model (with its edits), else
    :func:`_foreign_atoms`."""
    if layer.metadata.get("aet", {}).get("kind") == "atoms":
        return layers.atoms_from_layer(layer)
    return _foreign_atoms(layer)


def _edit_log(layer) -> list[dict]:
    """The layer's edit log (``metadata["aet"]["edits"]``, see :mod:`napari_aet.edit`); [] if none."""
    return layer.metadata.get("aet", {}).get("edits", [])


def write_atoms(path, data, attributes) -> list[str]:
    """napari writer for Points layers: atoms to ``.csv`` or ``.xyz`` in specimen Å, as
    ``napari-aet run`` writes ``atoms.csv``: without the peaks classified as noise or removed by
    the refinement (``non_atom``; hidden in the layer), which a warning counts.

    These tables keep the ``edited``/``locked`` columns but not the edit log: a warning says
    so when the layer has one.
    """
    layer = _layer(data, attributes)
    atoms = _points_atoms(layer)
    real = real_atoms(atoms)
    if len(real) < len(atoms):
        warnings.warn(f"{Path(path).name} keeps the {len(real)} atoms of layer {layer.name!r}, not its "
                      f"{len(atoms) - len(real)} non-atoms (peaks classified as noise or removed by the "
                      "refinement): save the layer as .aet to keep them", stacklevel=2)
    log = _edit_log(layer)
    if log:
        warnings.warn(f"{Path(path).name} keeps the atoms of layer {layer.name!r} but not its edit log "
                      f"({len(log)} entries): save the layer as .aet to keep the log too", stacklevel=2)
    return [str(write_atom_file(path, real))]


def write_project(path, data, attributes) -> list[str]:
    """napari writer for Points layers: an ``.aet`` project of one time point holding the atoms
    (in specimen Å, with every feature column) and the layer's edit log as its ``edits``.

    The time point is named after the layer without a trailing ": atoms"; opening the file gives
    the layer "<time point>: atoms" (a project's layer keeps its name) with the same atoms and log,
    on a 1 Å grid (the project holds no volume).
    """
    layer = _layer(data, attributes)
    point = TimePoint(layer.name.removesuffix(ATOMS_SUFFIX), atoms=_points_atoms(layer), edits=_edit_log(layer))
    return [str(save_project(path, Project([point])))]
