"""How the data types appear as napari layers (no Qt, no napari import).

World coordinates in the viewer are the specimen frame in Å, in napari's (z, y, x)
order with the rotation centre at the origin:

* a tilt series is an Image layer ``(n_angles, 1, ny, nx)`` — the projections with a z axis
  of one plane, ``nx`` pixels thick and centred on z = 0, so that it spans the z range of a
  volume reconstructed from it — with axis labels ``("tilt", "z", "y", "x")`` and a translate
  that puts pixel ``n // 2`` at 0: its tilt axis is a slider of its own, before the z slider of
  the volumes, so browsing the tilts never moves a volume's slice nor the reverse, and the
  current projection shows at every z; in 3D it is drawn as a plane through the centre (napari's
  ``depiction="plane"``), never as a block;
* a volume is an Image layer ``(nz, ny, nx)`` with axis labels ``("z", "y", "x")``, scale
  ``voxel_size`` and a translate that puts voxel ``n // 2`` at 0;
* atoms are a Points layer in voxel units (z, y, x) with the volume's scale and
  translate, per-atom columns in ``features`` (``element`` first).

Every layer made here carries ``metadata["aet"]`` with what is needed to rebuild the
data type: angles, pixel size, tilt axis, shifts; voxel size; method and errors.
"""

from __future__ import annotations

import numpy as np

from ..atom_labels import NON_ATOM, labels, model_elements
from ..geometry import centre, specimen_to_voxel, voxel_to_specimen
from ..model import ATOMIC_NUMBERS, AtomModel, InputError, Reconstruction, TiltSeries

#: Face colours (RGBA) of the elements that have one of their own.
ELEMENT_COLOURS = {
    "Fe": (0.95, 0.55, 0.15, 1.0), "Pt": (0.45, 0.65, 1.0, 1.0), "Au": (1.0, 0.85, 0.2, 1.0),
    "Pd": (0.3, 0.8, 0.8, 1.0), "Ni": (0.4, 0.9, 0.4, 1.0), "Co": (0.9, 0.3, 0.6, 1.0),
    "W": (0.7, 0.5, 0.9, 1.0),
}
#: Colours of the other elements, given in turn to those a model holds, lightest first (none is
#: grey, white or a colour of ELEMENT_COLOURS; they repeat only past ten such elements in a model).
EXTRA_ELEMENT_COLOURS = (
    (0.9, 0.2, 0.2, 1.0), (0.3, 0.35, 1.0, 1.0), (0.75, 0.9, 0.3, 1.0), (0.6, 0.3, 0.1, 1.0),
    (1.0, 0.6, 0.6, 1.0), (0.55, 0.2, 0.75, 1.0), (0.6, 0.95, 0.85, 1.0), (0.85, 0.75, 0.55, 1.0),
    (0.6, 0.6, 0.2, 1.0), (1.0, 0.4, 1.0, 1.0),
)
#: Colours of the points classified as not atoms, and of those not classified yet.
NON_ATOM_COLOUR = (0.6, 0.6, 0.6, 1.0)
UNCLASSIFIED_COLOUR = (0.9, 0.9, 0.9, 1.0)
#: Border colours of the atoms a person touched: locked (position and label kept as set), and
#: edited but free (e.g. placed by hand, its label left to the classifier).
LOCKED_BORDER = (1.0, 1.0, 1.0, 1.0)
EDITED_BORDER = (0.2, 0.9, 1.0, 1.0)
#: Diameter (Å) of a drawn atom, and the width of the border of an edited one (fraction of it).
ATOM_DIAMETER = 1.4
EDITED_BORDER_WIDTH = 0.3
#: Smallest and largest drawn size of an atom (canvas pixels): napari's largest, no smallest,
#: so that an atom of size 0 is not drawn at all (napari's default smallest is 2 pixels).
CANVAS_SIZE_LIMITS = (0.0, 10000.0)


#: Axis labels of the layers: a tilt series' own tilt axis comes before the volumes' z, y, x.
VOLUME_AXES = ("z", "y", "x")
TILT_SERIES_AXES = ("tilt", *VOLUME_AXES)


def robust_contrast(projections, spare=1e-3) -> tuple[float, float]:
    """Contrast limits of a stack of projections ``(n, ny, nx)``: per projection the values that
    leave the ``spare`` fraction of its darkest and brightest pixels out, then the median of those
    over the projections (up to 64 of them, about 16,000 pixels each). A few hot pixels at 60,000
    counts, or a blank projection, would otherwise set the range (black or washed-out images)."""
    stack = np.asarray(projections)
    stack = stack.reshape((1, -1) if stack.ndim < 2 else (len(stack), -1))
    picked = stack[:: max(1, len(stack) // 64), :: max(1, stack.shape[1] // 16_000)]
    low, high = (float(v) for v in np.median(np.quantile(picked, [spare, 1 - spare], axis=1), axis=1))
    return low, high if high > low else low + 1.0


def tilt_series_layer(series: TiltSeries, name="tilt series"):
    """Layer data tuple of a tilt series: ``(n_angles, 1, ny, nx)`` (a view of the projections),
    its tilt axis a slider of its own (see the module docstring)."""
    px = series.pixel_size
    ny, nx = series.projections.shape[1:]
    translate = tuple(-centre((ny, nx)) * px)
    return (series.projections[:, None], {
        "name": name, "scale": (1.0, nx * px, px, px), "translate": (0.0, 0.0, *translate),
        "contrast_limits": robust_contrast(series.projections),
        "axis_labels": TILT_SERIES_AXES, "depiction": "plane",
        "plane": {"position": (0.0, ny / 2, nx / 2), "normal": (1.0, 0.0, 0.0)},
        "metadata": {"aet": {"kind": "tilt_series", "angles": series.angles.tolist(),
                             "pixel_size": px, "tilt_axis": series.tilt_axis,
                             "shifts": series.shifts.tolist(), "info": series.metadata}},
    }, "image")


def tilt_series_from_layer(layer) -> TiltSeries:
    """The TiltSeries behind an Image layer made by :func:`tilt_series_layer` or a reader."""
    meta = layer.metadata.get("aet", {})
    if meta.get("kind") != "tilt_series":
        raise InputError(f"layer {layer.name!r} is not a tilt series: open one with File > Open "
                         "or File > Open Sample > napari-aet")
    if meta.get("angles_unknown"):
        raise InputError(f"the tilt angles of layer {layer.name!r} are unknown: enter them in the AET "
                         "workbench's Data step (a range or an angle file) and press Use for the study")
    return TiltSeries(projections_of(layer), np.asarray(meta["angles"]), meta["pixel_size"],
                      meta.get("tilt_axis", 0.0), np.asarray(meta["shifts"]), dict(meta.get("info", {})))


def projections_of(layer) -> np.ndarray:
    """The ``(n_angles, ny, nx)`` projections an Image layer of a tilt series shows (its data
    without the one-plane z axis of :func:`tilt_series_layer`; 3D data as they are)."""
    data = np.asarray(layer.data)
    return data[:, 0] if data.ndim == 4 and data.shape[1] == 1 else data


def _volume_placement(shape, voxel_size):
    scale = (voxel_size,) * 3
    return scale, tuple(-centre(shape) * voxel_size)


def volume_layer(reconstruction: Reconstruction, name="reconstruction"):
    """Layer data tuple of a reconstructed volume, placed in specimen Å."""
    scale, translate = _volume_placement(reconstruction.volume.shape, reconstruction.voxel_size)
    return (reconstruction.volume, {
        "name": name, "scale": scale, "translate": translate, "axis_labels": VOLUME_AXES, "rendering": "mip",
        "colormap": "magma",
        "metadata": {"aet": {"kind": "volume", "voxel_size": reconstruction.voxel_size,
                             "method": reconstruction.method, "parameters": reconstruction.parameters,
                             "errors": reconstruction.errors}},
    }, "image")


def reconstruction_from_layer(layer) -> Reconstruction:
    """The Reconstruction behind a volume Image layer (3D; voxel size from metadata or scale)."""
    data = np.asarray(layer.data)
    if data.ndim != 3:
        raise InputError(f"layer {layer.name!r} is not a volume: expected 3D data, got shape {data.shape}")
    meta = layer.metadata.get("aet", {})
    voxel = meta.get("voxel_size", float(layer.scale[-1]))
    return Reconstruction(data, voxel, meta.get("method", ""), dict(meta.get("parameters", {})),
                          dict(meta.get("errors", {})))


def label_colours(elements) -> dict[str, tuple]:
    """RGBA colour of every label of a model made of ``elements`` (symbols), the one source of
    the colours of atoms in layers, histograms and legends.

    Each element has its own: its :data:`ELEMENT_COLOURS` entry, else the next of
    :data:`EXTRA_ELEMENT_COLOURS`, given to ``elements`` outside the table lightest first; a
    non-atom (:data:`~napari_aet.atom_labels.NON_ATOM`) is :data:`NON_ATOM_COLOUR`, an
    unclassified point ("") :data:`UNCLASSIFIED_COLOUR`.
    """
    others = sorted(set(elements) - set(ELEMENT_COLOURS), key=ATOMIC_NUMBERS.__getitem__)
    return {NON_ATOM: NON_ATOM_COLOUR, "": UNCLASSIFIED_COLOUR,
            **{e: ELEMENT_COLOURS[e] for e in elements if e in ELEMENT_COLOURS},
            **{e: EXTRA_ELEMENT_COLOURS[k % len(EXTRA_ELEMENT_COLOURS)] for k, e in enumerate(others)}}


def atom_colours(atoms: AtomModel) -> np.ndarray:
    """``(N, 4)`` RGBA face colours of ``atoms`` by label (:func:`label_colours` of its elements)."""
    colours = label_colours(model_elements(atoms))
    return np.array([colours[label] for label in labels(atoms)], dtype=float).reshape(-1, 4)


def _flag(atoms: AtomModel, name) -> np.ndarray:
    return np.asarray(atoms.features.get(name, np.zeros(len(atoms), bool)), dtype=bool)


def atom_style(atoms: AtomModel, voxel_size, *, show_non_atoms=False) -> dict:
    """Display of ``atoms`` as Points layer keyword arguments: per point, and the drawn size limits.

    Face colour by label (:func:`atom_colours`); a border on atoms a person edited
    (:data:`LOCKED_BORDER` on locked ones, :data:`EDITED_BORDER` on the others). Non-atoms
    (feature ``non_atom``) stay in the layer, so that point indices are atom indices, but unless
    ``show_non_atoms`` they are not drawn: ``shown`` False hides them in 2D, and size 0 in 3D,
    where napari 0.9.2 draws every point whatever ``shown`` says when all the layer's axes are
    displayed. A point of size 0 is neither drawn nor picked only with
    :data:`CANVAS_SIZE_LIMITS`: napari's default draws every point at least 2 canvas pixels
    wide, so a dot would remain.
    """
    shown = show_non_atoms | ~_flag(atoms, "non_atom")
    locked, edited = _flag(atoms, "locked"), _flag(atoms, "edited")
    border = np.where(locked[:, None], LOCKED_BORDER, EDITED_BORDER).reshape(-1, 4)
    return {"shown": shown, "size": np.where(shown, ATOM_DIAMETER / voxel_size, 0.0),
            "face_color": atom_colours(atoms), "border_color": border,
            "border_width": np.where(locked | edited, EDITED_BORDER_WIDTH, 0.0),
            "canvas_size_limits": CANVAS_SIZE_LIMITS}


def restyle_atoms(layer, atoms: AtomModel | None = None):
    """Draw an atoms layer as :func:`atom_style` says for ``atoms`` (default: the layer's own),
    showing non-atoms if the layer's ``metadata["aet"]["show_non_atoms"]`` is True."""
    atoms = atoms_from_layer(layer) if atoms is None else atoms
    meta = layer.metadata["aet"]
    for key, value in atom_style(atoms, meta["voxel_size"], show_non_atoms=meta.get("show_non_atoms", False)).items():
        setattr(layer, key, value)


def atoms_layer(atoms: AtomModel, volume_shape, voxel_size, name="atoms", *, show_non_atoms=False):
    """Layer data tuple of an atom model over a volume of ``volume_shape`` (nz, ny, nx).

    Drawn as :func:`atom_style` says: peaks classified as noise (feature ``non_atom``) are kept
    in the layer but not drawn, in 2D and 3D, unless ``show_non_atoms``.
    """
    scale, translate = _volume_placement(volume_shape, voxel_size)
    frame = atoms.to_frame().drop(columns=["x", "y", "z"])
    return (specimen_to_voxel(atoms.positions, volume_shape, voxel_size), {
        **atom_style(atoms, voxel_size, show_non_atoms=show_non_atoms),
        "name": name, "scale": scale, "translate": translate, "features": frame,
        "border_width_is_relative": True, "projection_mode": "none",
        "metadata": {"aet": {"kind": "atoms", "volume_shape": list(volume_shape),
                             "voxel_size": voxel_size, "show_non_atoms": show_non_atoms}},
    }, "points")


def atoms_from_layer(layer) -> AtomModel:
    """The AtomModel behind a Points layer made by :func:`atoms_layer` (including user edits)."""
    meta = layer.metadata.get("aet", {})
    if meta.get("kind") != "atoms":
        raise InputError(f"layer {layer.name!r} is not an atom model made by napari-aet")
    frame = layer.features.copy()
    positions = voxel_to_specimen(np.asarray(layer.data), meta["volume_shape"], meta["voxel_size"])
    species = frame.pop("element").fillna("").astype(str).to_numpy(object) if "element" in frame else None
    return AtomModel(positions, species, {c: frame[c].to_numpy() for c in frame.columns})
