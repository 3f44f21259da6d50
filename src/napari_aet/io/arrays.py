"""Read an n-D image array and its calibration from any supported file format.

The tilt-series, frame and volume readers build on :func:`read_image_file`, which turns
every library failure into one :class:`~napari_aet.model.InputError` sentence.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ElementTree
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..model import InputError
from .files import existing_file, suffix_of
from .microscope import read_dm, read_emd
from .units import to_angstrom


@dataclass
class ImageFile:
    """What a file holds, before interpretation.

    data : the stored array in numpy order (a stack or volume is ``(n, ny, nx)``, except
        GENFIRE arrays, see :mod:`napari_aet.io.tilt_series`).
    pixel_size : Å per pixel from the file's calibration, None if it has none.
    angles : tilt angles (degrees) found in the metadata, None if absent.
    kind : ``"volume"`` or ``"stack"`` when the header says so, else None.
    info : JSON-able description (source file, format, microscope fields).
    """

    data: np.ndarray
    pixel_size: float | None = None
    angles: np.ndarray | None = None
    kind: str | None = None
    info: dict = field(default_factory=dict)


def _tiff_pixel_size(tif) -> float | None:
    if tif.is_ome:
        pixels = ElementTree.fromstring(tif.ome_metadata).find(".//{*}Pixels")
        if pixels is not None and "PhysicalSizeX" in pixels.attrib:
            return to_angstrom(pixels.get("PhysicalSizeX"), pixels.get("PhysicalSizeXUnit", "µm"))
    unit = (tif.imagej_metadata or {}).get("unit")
    resolution = tif.pages[0].tags.get("XResolution")
    if unit is None or resolution is None:
        return None
    numerator, denominator = resolution.value
    return to_angstrom(denominator / numerator, unit) if numerator else None


class _LibraryErrors(logging.Handler):
    """Collects the errors a library logs instead of raising (tifffile logs a truncated file)."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage().split("> ")[-1])


@contextmanager
def _logged_errors_raised(logger_name):
    """Silence ``logger_name`` and raise its first logged error as an exception at the end."""
    logger, handler = logging.getLogger(logger_name), _LibraryErrors()
    propagate, logger.propagate = logger.propagate, False
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
    if handler.messages:
        raise ValueError(f"truncated or corrupt file: {handler.messages[-1]}")


def _check_channels_are_frames(data, axes, name):
    """InputError unless the channels (ImageJ axis C, or S) of a stack are frames of one image, to
    be registered and summed: detector channels (HAADF and BF: BF is dark where HAADF is bright) or
    colour samples are not."""
    axis = axes.index("C" if "C" in axes else "S")
    channels = np.moveaxis(data, axis, 0).reshape(data.shape[axis], -1).astype(np.float64)
    if "S" in axes or np.corrcoef(channels)[0, 1:].min() < 0:
        raise InputError(f"{name} holds {data.shape[axis]} channels per image (axes {axes}) that are not frames of "
                         "one image (e.g. HAADF and BF, or RGB): save the ADF channel alone as a grey-scale stack")


def _read_tiff(path: Path) -> ImageFile:
    import tifffile

    with _logged_errors_raised("tifffile"), tifffile.TiffFile(path) as tif:
        axes = tif.series[0].axes if tif.series else ""
        data = tif.asarray()
        if len(axes) > 3 and ("C" in axes or "S" in axes):
            _check_channels_are_frames(data, axes, path.name)
        kind = (tif.imagej_metadata or {}).get("aet_kind")
        pixel_size = _tiff_pixel_size(tif)
    return ImageFile(data, pixel_size, kind=kind, info={"format": "TIFF"})


def _read_mrc(path: Path) -> ImageFile:
    import mrcfile

    with mrcfile.open(path, permissive=False) as mrc:
        data = np.array(mrc.data)
        size = float(mrc.voxel_size.x)
        ispg = int(mrc.header.ispg)
        angles = None
        extended = mrc.indexed_extended_header if bytes(mrc.header.exttyp).startswith(b"FEI") else None
        if extended is not None and "Alpha tilt" in extended.dtype.names:
            tilts = np.asarray(extended["Alpha tilt"], dtype=np.float64)
            angles = tilts if len(np.unique(tilts)) == len(tilts) else None
    kind = "stack" if ispg == 0 else "volume" if ispg == 1 else None
    return ImageFile(data, size if size > 0 else None, angles, kind, {"format": "MRC", "ispg": ispg})


def _read_npy(path: Path) -> ImageFile:
    return ImageFile(np.load(path, allow_pickle=False), info={"format": "NPY"})


def read_mat(path) -> np.ndarray:
    """The array in a MATLAB file (v5 via scipy, v7.3 via h5py), indexed as in MATLAB.

    The file must hold one numeric array of two or more dimensions (the largest is taken
    if there are several).
    """
    import scipy.io

    try:
        variables = scipy.io.loadmat(path)
    except NotImplementedError:  # v7.3 files are HDF5, stored with reversed axes
        import h5py

        with h5py.File(path, "r") as handle:
            variables = {k: np.asarray(v).T for k, v in handle.items() if isinstance(v, h5py.Dataset)}
    arrays = [v for k, v in variables.items()
              if not k.startswith("__") and isinstance(v, np.ndarray) and v.dtype.kind in "biuf"]
    if not arrays:
        raise InputError(f"{Path(path).name} holds no numeric array")
    return max(arrays, key=np.size)


def _read_mat(path: Path) -> ImageFile:
    return ImageFile(read_mat(path), info={"format": "MAT"})


def _read_microscope(reader):
    def read(path: Path) -> ImageFile:
        data, pixel_size, angles, info = reader(path)
        return ImageFile(np.asarray(data), pixel_size, angles, info=info)
    return read


_read_emd, _read_dm = _read_microscope(read_emd), _read_microscope(read_dm)


#: Readers by extension, and the format names used in messages.
READERS = {".tif": _read_tiff, ".tiff": _read_tiff, ".mrc": _read_mrc, ".st": _read_mrc, ".ali": _read_mrc,
           ".rec": _read_mrc, ".npy": _read_npy, ".mat": _read_mat, ".emd": _read_emd, ".dm3": _read_dm,
           ".dm4": _read_dm}
FORMAT_NAMES = {".tif": "TIFF", ".tiff": "TIFF", ".mrc": "MRC", ".st": "MRC", ".ali": "MRC", ".rec": "MRC",
                ".npy": "NumPy", ".mat": "MATLAB", ".emd": "EMD", ".dm3": "DM3", ".dm4": "DM4"}


def read_image_file(path, extensions=tuple(READERS)) -> ImageFile:
    """Read the array and calibration of an image file.

    Raises InputError for a missing file, an extension outside ``extensions``, a file the
    format library cannot parse, or data that is not a real-valued array.
    """
    path = existing_file(path)
    suffix = suffix_of(path, set(extensions), "an image file")
    try:
        image = READERS[suffix](path)
    except InputError:
        raise
    except Exception as exc:  # every library has its own errors; the user needs one sentence
        detail = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot read {path.name} as {FORMAT_NAMES[suffix]} data ({detail}): "
                         "is the file complete and of the type its extension says?") from exc
    data = np.asarray(image.data)
    if data.dtype.kind not in "biuf":
        raise InputError(f"{path.name} holds {data.dtype} data: expected real-valued pixels")
    image.data = data
    image.info = {"source": str(path), **image.info}
    return image
