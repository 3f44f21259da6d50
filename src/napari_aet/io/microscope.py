"""Microscope files read through ncempy: Berkeley EMD, Velox EMD, DM3/DM4.

Each reader returns ``(data, pixel_size, angles, info)``: the array with the projection
axis first, the pixel size in Å (None if the file has none), tilt angles in degrees (None
if absent) and a small JSON-able dict of what was found. The metadata extraction is
split into pure functions so that it can be checked on dicts shaped like ncempy's output.
"""

from __future__ import annotations

import contextlib
import io
import os

import numpy as np

from .units import to_angstrom

ANGLE_UNITS = {"deg": 1.0, "degree": 1.0, "degrees": 1.0, "°": 1.0, "rad": 180 / np.pi, "radian": 180 / np.pi,
               "radians": 180 / np.pi, "mrad": 0.18 / np.pi}


def _quiet():
    """ncempy prints to stdout; keep it out of the user's terminal."""
    return contextlib.redirect_stdout(io.StringIO())


def _step(vector) -> float | None:
    vector = np.asarray(vector, dtype=np.float64).ravel()
    return float(vector[1] - vector[0]) if len(vector) > 1 else None


def berkeley_dims_metadata(dims):
    """Pixel size (Å), tilt angles (degrees) and the angle axis from Berkeley-EMD dims.

    dims : ``[(vector, name, units), ...]`` one per data axis (ncempy ``get_emddims``).
    An axis whose units are angular (deg, rad, mrad) or whose name mentions "angle"/"tilt"
    holds the tilt angles; the pixel size is the step of the last axis with a length unit.
    Returns ``(pixel_size or None, angles or None, angle_axis or None)``.
    """
    angle_axis, angles, pixel_size = None, None, None
    for axis, (vector, name, units) in enumerate(dims):
        units, name = str(units).strip().lower(), str(name).lower()
        if units in ANGLE_UNITS or "angle" in name or "tilt" in name:
            angle_axis = axis
            angles = np.asarray(vector, dtype=np.float64).ravel() * ANGLE_UNITS.get(units, 1.0)
        else:
            step = _step(vector)
            size = to_angstrom(abs(step), units) if step else None
            pixel_size = size if size is not None else pixel_size
    return pixel_size, angles, angle_axis


def read_berkeley_emd(path):
    """The first data set of a Berkeley EMD (v0.2) file."""
    from ncempy.io import emd

    with _quiet(), emd.fileEMD(path, readonly=True) as handle:
        if not handle.list_emds:
            raise emd.NoEmdDataSets
        group = handle.list_emds[0]
        data = np.asarray(group["data"][:])
        dims = handle.get_emddims(group)
    pixel_size, angles, angle_axis = berkeley_dims_metadata(dims)
    if angle_axis is not None:
        data = np.moveaxis(data, angle_axis, 0)
    return data, pixel_size, angles, {"format": "Berkeley EMD", "dims": [str(d[1]) for d in dims]}


def velox_metadata(md) -> tuple[float | None, float | None]:
    """Pixel size (Å) and stage alpha tilt (degrees) from ncempy's Velox metadata dict.

    md : ``{"pixelSize": (x, y), "pixelUnit": [ux, uy], "Stage": {"AlphaTilt": radians}}``.
    """
    size = md.get("pixelSize")
    unit = (md.get("pixelUnit") or [None])[0]
    pixel_size = to_angstrom(size[0], unit) if size is not None else None
    alpha = (md.get("Stage") or {}).get("AlphaTilt")
    try:
        alpha = float(np.rad2deg(float(alpha)))
    except (TypeError, ValueError):
        alpha = None
    return pixel_size, alpha


def read_velox_emd(path):
    """A Velox EMD file: several 2D images become a stack with one stage tilt each; a single
    3D data set (ny, nx, n) becomes (n, ny, nx) without angles."""
    from ncempy.io import emdVelox

    with _quiet(), emdVelox.fileEMDVelox(path) as handle:
        if not handle.list_data:
            raise ValueError("no image data set in /Data/Image")
        images, metas = zip(*(handle.get_dataset(i) for i in range(len(handle.list_data))))
    sizes, alphas = zip(*(velox_metadata(md) for md in metas))
    info = {"format": "Velox EMD", "detector": str(metas[0].get("detectorName", ""))}
    if len(images) == 1:
        data = np.asarray(images[0])
        return (np.moveaxis(data, -1, 0) if data.ndim == 3 else data), sizes[0], None, info
    if len({np.shape(im) for im in images}) != 1:
        raise ValueError("its image data sets differ in shape, so they do not form a tilt series")
    angles = None if any(a is None for a in alphas) else np.array(alphas)
    return np.stack(images), sizes[0], angles, info


def read_emd(path):
    """An EMD file, Berkeley format first, then Velox."""
    import h5py
    from ncempy.io import emd

    if not h5py.is_hdf5(path):
        raise ValueError("not an HDF5 file")
    try:
        return read_berkeley_emd(path)
    except emd.NoEmdDataSets:
        return read_velox_emd(path)


def dm_metadata(dataset: dict, tags: dict):
    """Pixel size (Å) and stage alpha tilt (degrees) from ncempy's DM output.

    dataset : ``ncempy.io.dm.dmReader`` dict with ``pixelSize`` and ``pixelUnit`` per axis
        (C order; the last axis is x).
    tags : ``fileDM.getMetadata`` dict; its ``"Microscope Info Stage Position Stage Alpha"``
        (degrees) is the tilt of a single image.
    """
    sizes, units = list(dataset.get("pixelSize", [])), list(dataset.get("pixelUnit", []))
    pixel_size = to_angstrom(sizes[-1], units[-1]) if sizes and units else None
    alpha = next((v for k, v in tags.items() if k.endswith("Stage Alpha")), None)
    try:
        alpha = float(alpha)
    except (TypeError, ValueError):
        alpha = None
    return pixel_size, alpha


def read_dm(path):
    """A DM3/DM4 file: its first data set and pixel size. A stack carries no per-image tilts
    in DM tags, so angles come from a sidecar; the stage alpha is kept in ``info``."""
    from ncempy.io import dm

    if os.path.getsize(path) == 0:  # ncempy cannot map it and its half-built reader prints a traceback
        raise ValueError("the file is empty")
    with _quiet(), dm.fileDM(path) as handle:
        dataset = handle.getDataset(0)
        tags = handle.getMetadata(0)
    pixel_size, alpha = dm_metadata(dataset, tags)
    return np.asarray(dataset["data"]), pixel_size, None, {"format": "Digital Micrograph", "stage_alpha": alpha}
