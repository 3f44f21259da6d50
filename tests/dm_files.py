"""Minimal Gatan DigitalMicrograph (DM3/DM4) files for tests.

Layout (learnt from ncempy's reader and the public DM3/DM4 format notes): a big-endian
header (version, root length, byte order 1 = little-endian data), one root tag group, and
8 zero bytes. A tag group is ``sorted (u1), open (u1), n_tags``; a tag entry is
``kind (u1: 20 group, 21 data), label length (>u2), label`` followed (DM4 only) by the byte
length of the rest of the entry, then the group or ``"%%%%", n_info, info..., payload``.
Integers in the header, counts and info are 4 bytes in DM3 and 8 bytes in DM4; payloads
are little-endian. An image sits in ``ImageList`` as ``ImageData`` (``Data``, ``DataType``,
``Dimensions`` x first, ``Calibrations/Dimension`` with ``Origin``, ``Scale``, ``Units``)
plus ``ImageTags``. DM writes an RGB thumbnail as the first image; ncempy skips it.
"""

from __future__ import annotations

import struct

import numpy as np

#: numpy dtype -> DM image ``DataType``.
PIXEL_TYPES = {np.dtype(np.int16): 1, np.dtype(np.float32): 2, np.dtype(np.uint8): 6, np.dtype(np.int32): 7,
               np.dtype(np.uint16): 10, np.dtype(np.uint32): 11, np.dtype(np.float64): 12}
#: Tag encoded types of scalars and array items.
ENCODED_TYPES = {np.dtype(np.int16): 2, np.dtype(np.int32): 3, np.dtype(np.uint16): 4, np.dtype(np.uint32): 5,
                 np.dtype(np.float32): 6, np.dtype(np.float64): 7, np.dtype(np.uint8): 10}
ARRAY, GROUP, DATA = 20, 20, 21
RGB_THUMBNAIL = 23


def _count(value: int, version: int) -> bytes:
    return struct.pack(">I" if version == 3 else ">Q", value)


def _data_tag(value, version: int) -> bytes:
    """``%%%%``, the type definition and the little-endian payload of one data tag.

    A str is stored as DM does, as an array of UTF-16 code units; an ndarray as an array of
    its dtype; a numpy or Python scalar as one value (Python int -> int32, float -> double).
    """
    if isinstance(value, str):
        value = np.frombuffer(value.encode("utf-16-le"), dtype="<u2")
    if isinstance(value, np.ndarray):
        items = np.ascontiguousarray(value).ravel()
        info = [ARRAY, ENCODED_TYPES[items.dtype.newbyteorder("=")], items.size]
    else:
        items = np.asarray(value, dtype=np.int32 if isinstance(value, int) else None)
        info = [ENCODED_TYPES[items.dtype.newbyteorder("=")]]
    payload = items.astype(items.dtype.newbyteorder("<")).tobytes()
    return b"%%%%" + _count(len(info), version) + b"".join(_count(i, version) for i in info) + payload


def _group(tags, version: int) -> bytes:
    """A tag group: a dict gives labelled entries, a list unlabelled ones (numbered by readers)."""
    items = tags.items() if isinstance(tags, dict) else (("", value) for value in tags)
    entries = [_entry(label, value, version) for label, value in items]
    return struct.pack(">BB", 1, 0) + _count(len(entries), version) + b"".join(entries)


def _entry(label: str, value, version: int) -> bytes:
    is_group = isinstance(value, (dict, list))
    body = _group(value, version) if is_group else _data_tag(value, version)
    name = label.encode("latin-1")
    length = _count(len(body), version) if version == 4 else b""
    return struct.pack(">BH", GROUP if is_group else DATA, len(name)) + name + length + body


def _image(data: np.ndarray, data_type: int, scales, units, image_tags: dict, name: str) -> dict:
    """One ``ImageList`` entry; ``scales``/``units`` are per axis in DM order (x first)."""
    calibrations = [{"Origin": np.float32(0), "Scale": np.float32(s), "Units": u} for s, u in zip(scales, units)]
    return {"ImageData": {"Calibrations": {"Dimension": calibrations},
                          "Data": data,
                          "DataType": np.int32(data_type),
                          "Dimensions": [np.uint32(n) for n in data.shape[::-1]],
                          "PixelDepth": np.int32(data.dtype.itemsize)},
            "ImageTags": image_tags,
            "Name": name}


def dm_bytes(data, pixel_size_nm: float, version: int = 3, tilt_angle: float | None = None, *,
             thumbnail: bool = True) -> bytes:
    """The bytes of a DM3 (``version=3``) or DM4 (``version=4``) file holding ``data``.

    data : ``(ny, nx)`` image or ``(n, ny, nx)`` stack (C order, x = columns) of a dtype in
        :data:`PIXEL_TYPES`.
    pixel_size_nm : x and y calibration, stored as ``Scale`` with ``Units`` "nm"; a stack's
        third axis gets scale 1 and no unit, as DM writes for image stacks.
    tilt_angle : degrees, stored as ``ImageTags/Microscope Info/Stage Position/Stage Alpha``.
    thumbnail : write a 4x4 RGB thumbnail as the first image, as DigitalMicrograph does.
    """
    if version not in (3, 4):
        raise ValueError(f"version must be 3 or 4, got {version}")
    data = np.asarray(data)
    if data.ndim not in (2, 3) or data.dtype not in PIXEL_TYPES:
        raise ValueError(f"need a 2D or 3D array of {sorted(map(str, PIXEL_TYPES))}, "
                         f"got {data.dtype} {data.shape}")
    scales, units = [pixel_size_nm, pixel_size_nm, 1.0][:data.ndim], ["nm", "nm", ""][:data.ndim]
    tags = {} if tilt_angle is None else {
        "Microscope Info": {"Stage Position": {"Stage Alpha": np.float32(tilt_angle)}}}
    images = [_image(data, PIXEL_TYPES[data.dtype], scales, units, tags, "data")]
    if thumbnail:
        rgba = np.full((4, 4), 0xFF808080, dtype=np.uint32)
        images.insert(0, _image(rgba, RGB_THUMBNAIL, [1.0, 1.0], ["", ""], {}, "thumbnail"))
    root = _group({"ImageList": images}, version)
    end = bytes(8)  # DM marks the end of the file with 8 zero bytes
    # "root length": file length - 16 in the public DM3 notes, - 24 taken for DM4 (ncempy ignores it)
    root_length = len(root) + 4 if version == 3 else len(root)
    header = struct.pack(">I", version) + _count(root_length, version) + struct.pack(">I", 1)
    return header + root + end


def write_dm(path, data, pixel_size_nm: float, version: int = 3, tilt_angle: float | None = None, *,
             thumbnail: bool = True):
    """Write :func:`dm_bytes` to ``path`` (use a ``.dm3``/``.dm4`` suffix); returns ``path``."""
    with open(path, "wb") as handle:
        handle.write(dm_bytes(data, pixel_size_nm, version, tilt_angle, thumbnail=thumbnail))
    return path
