"""Reconstructed volumes: MRC (.mrc .rec) with the voxel size in the header, ImageJ TIFF, NPY, MAT.

Layouts: ``"zyx"`` (default) is ``(nz, ny, nx)``; ``"genfire"`` is GENFIRE-Python's
``[x, y, z]`` indexing, read as ``data.transpose(2, 1, 0)``. It applies to GENFIRE's .npy and
.mat volumes and to cubic .mrc files from GENFIRE's own MRC writer, which dumps the array's
bytes in C order so that they read back still indexed ``[x, y, z]``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import __version__
from ..model import InputError, Reconstruction
from .arrays import ImageFile, read_image_file
from .files import atomic_write, suffix_of

READ_EXTENSIONS = (".mrc", ".rec", ".tif", ".tiff", ".npy", ".mat")
WRITE_EXTENSIONS = {".mrc", ".rec", ".tif", ".tiff"}
LAYOUTS = ("zyx", "genfire")


def read_volume(path, *, voxel_size=None, layout="zyx", missing_voxel_size=None) -> Reconstruction:
    """Read a volume as a Reconstruction (float32 ``(nz, ny, nx)``).

    voxel_size : Å; None takes it from the MRC header or TIFF calibration.
    layout : ``"zyx"`` or ``"genfire"`` (arrays indexed [x, y, z]).
    missing_voxel_size : Å to use, flagged by ``metadata["voxel_size_unknown"] = True``, when
        the file has no calibration and ``voxel_size`` is None; None raises InputError instead.
    """
    image = read_image_file(path, extensions=READ_EXTENSIONS)
    return reconstruction_from_image(image, Path(path), voxel_size=voxel_size, layout=layout,
                                     missing_voxel_size=missing_voxel_size)


def reconstruction_from_image(image: ImageFile, path: Path, *, voxel_size=None, layout="zyx",
                              missing_voxel_size=None) -> Reconstruction:
    """The Reconstruction in an already read file (see :func:`read_volume` for the parameters)."""
    if layout not in LAYOUTS:
        raise InputError(f"unknown volume layout {layout!r}: expected one of {', '.join(LAYOUTS)}")
    if image.data.ndim != 3:
        raise InputError(f"{path.name} holds a {image.data.ndim}D array of shape {image.data.shape}: "
                         "expected a volume (nz, ny, nx)")
    data = image.data.transpose(2, 1, 0) if layout == "genfire" else image.data
    info = dict(image.info)
    voxel_size = image.pixel_size if voxel_size is None else voxel_size
    if voxel_size is None:
        if missing_voxel_size is None:
            raise InputError(f"{path.name} has no voxel size in its metadata: give the voxel size in Å "
                             "(voxel_size=..., --voxel-size on the command line)")
        voxel_size, info["voxel_size_unknown"] = missing_voxel_size, True
    try:
        return Reconstruction(data, voxel_size, metadata=info)
    except InputError as exc:
        raise InputError(f"{path.name}: {exc}") from None


def write_volume(path, reconstruction: Reconstruction) -> Path:
    """Write a volume atomically: ``.mrc``/``.rec`` (MRC volume, ispg 1, voxel size in Å in the
    header; as origin the position of voxel (0, 0, 0), ``-(n // 2) * voxel_size`` Å per axis, so that
    voxel ``n // 2``, the rotation centre, is at 0 Å like the atoms' positions) or ``.tif``/``.tiff``
    (ImageJ float32 stack calibrated in nm, z spacing included). The MRC header's labels name
    napari-aet, its version and the method; parameters and error curves are kept only in the
    project file."""
    path = Path(path)
    suffix = suffix_of(path, WRITE_EXTENSIONS, "a volume")
    volume = np.asarray(reconstruction.volume, dtype=np.float32)
    with atomic_write(path) as temporary:
        if suffix in (".tif", ".tiff"):
            import tifffile

            per_nm = 10.0 / reconstruction.voxel_size
            tifffile.imwrite(temporary, volume, imagej=True, resolution=(per_nm, per_nm),
                             metadata={"unit": "nm", "axes": "ZYX", "spacing": 1.0 / per_nm,
                                       "aet_kind": "volume"})
        else:
            import mrcfile

            with mrcfile.new(temporary, overwrite=True) as mrc:
                mrc.set_data(volume)
                mrc.set_volume()
                mrc.voxel_size = reconstruction.voxel_size
                # (x, y, z) Å of voxel (0, 0, 0), where ChimeraX and EMAN put it (voxel i at origin + i * size)
                mrc.header.origin = tuple(-(n // 2) * reconstruction.voxel_size for n in volume.shape[::-1])
                mrc.add_label(f"napari-aet {__version__}: {reconstruction.method} reconstruction"[:80])
                mrc.add_label("origin: the rotation centre at 0 A, as in atoms.csv")
    return path
