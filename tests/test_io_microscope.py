"""EMD (Berkeley, Velox) and DM3/DM4 metadata.

Berkeley EMD files are written with ncempy's own writer and Velox files as minimal HDF5
files with Velox's layout (Data/Image/<id>/Data + JSON Metadata). The DM metadata extraction
is tested here on dicts shaped like ncempy's; whole DM3/DM4 files in tests/test_io_dm.py.
"""

import json

import h5py
import numpy as np
import pytest

from napari_aet.io import read_tilt_series
from napari_aet.io.microscope import berkeley_dims_metadata, dm_metadata, velox_metadata
from napari_aet.io.units import to_angstrom
from napari_aet.model import InputError
from napari_aet.simulate import sample_fept


@pytest.fixture(scope="module")
def series():
    return sample_fept(size=64, radius=8).tilt_series


def write_berkeley(path, data, dims):
    from ncempy.io import emd

    with emd.fileEMD(path, readonly=False) as handle:
        handle.put_emdgroup("tilt_series", data, dims)


def axis(n, step):
    return np.arange(n) * step


def test_berkeley_emd_with_angle_axis(tmp_path, series):
    data = series.projections[:7]
    angles = series.angles[:7]
    write_berkeley(tmp_path / "s.emd", data, [(angles, "tilt angle", "deg"), (axis(64, 0.04), "y", "nm"),
                                              (axis(64, 0.04), "x", "nm")])
    back = read_tilt_series(tmp_path / "s.emd")
    np.testing.assert_array_equal(back.projections, data)
    np.testing.assert_allclose(back.angles, angles)
    assert back.pixel_size == pytest.approx(0.4)
    assert back.metadata["format"] == "Berkeley EMD"


def test_berkeley_emd_angle_axis_last_in_radians(tmp_path, series):
    data = series.projections[:5]
    angles = series.angles[:5]
    write_berkeley(tmp_path / "s.emd", np.moveaxis(data, 0, -1),
                   [(axis(64, 0.5), "y", "Å"), (axis(64, 0.5), "x", "Å"), (np.deg2rad(angles), "alpha", "rad")])
    back = read_tilt_series(tmp_path / "s.emd")
    np.testing.assert_array_equal(back.projections, data)
    np.testing.assert_allclose(back.angles, angles)
    assert back.pixel_size == pytest.approx(0.5)


def test_berkeley_emd_without_calibration_needs_angles_and_pixel_size(tmp_path, series):
    from ncempy.io import emd

    emd.emdWriter(tmp_path / "plain.emd", series.projections[:4])
    with pytest.raises(InputError, match="no tilt angles for plain.emd"):
        read_tilt_series(tmp_path / "plain.emd")
    with pytest.raises(InputError, match="plain.emd has no pixel size"):
        read_tilt_series(tmp_path / "plain.emd", angles=series.angles[:4])


def write_velox(path, images, pixel_size_m, alphas_rad):
    with h5py.File(path, "w") as handle:
        for index, (image, alpha) in enumerate(zip(images, alphas_rad)):
            group = handle.create_group(f"Data/Image/{index:032x}")
            group.create_dataset("Data", data=image[..., None])
            meta = {"BinaryResult": {"PixelUnitX": "m", "PixelUnitY": "m", "Detector": "HAADF",
                                     "PixelSize": {"width": str(pixel_size_m), "height": str(pixel_size_m)}},
                    "Acquisition": {"AcquisitionStartDatetime": {"DateTime": "1700000000"}},
                    "Stage": {"AlphaTilt": str(alpha)}, "CustomProperties": {}}
            text = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
            group.create_dataset("Metadata", data=np.pad(text, (0, 64))[:, None])


def test_velox_emd_one_image_per_tilt(tmp_path, series):
    data = series.projections[:4]
    write_velox(tmp_path / "v.emd", data, 0.4e-10, np.deg2rad(series.angles[:4]))
    back = read_tilt_series(tmp_path / "v.emd")
    np.testing.assert_array_equal(back.projections, data)
    np.testing.assert_allclose(back.angles, series.angles[:4], atol=1e-9)
    assert back.pixel_size == pytest.approx(0.4)
    assert back.metadata["format"] == "Velox EMD" and back.metadata["detector"] == "HAADF"


def test_velox_metadata():
    md = {"pixelSize": (0.035, 0.035), "pixelUnit": ["nm", "nm"], "Stage": {"AlphaTilt": "-0.5235987756"}}
    size, alpha = velox_metadata(md)
    assert size == pytest.approx(0.35) and alpha == pytest.approx(-30.0)
    assert velox_metadata({"pixelSize": (1.0, 1.0), "pixelUnit": ["pixel", "pixel"]}) == (None, None)


def test_berkeley_dims_metadata():
    dims = [(np.array([-60.0, 0.0, 60.0]), "tilt", "degrees"), (axis(4, 35.0), "y", "pm"), (axis(4, 35.0), "x", "pm")]
    size, angles, angle_axis = berkeley_dims_metadata(dims)
    assert size == pytest.approx(0.35) and angle_axis == 0
    np.testing.assert_array_equal(angles, [-60, 0, 60])
    assert berkeley_dims_metadata([(axis(4, 1.0), "dim1", "unit1")] * 3) == (None, None, None)


def test_dm_metadata_on_ncempy_dicts():
    # what ncempy.io.dm.dmReader returns for a 3D stack, C order (z, y, x), and fileDM.getMetadata tags
    dataset = {"data": np.zeros((3, 8, 8)), "pixelSize": [1.0, 0.0412, 0.0412], "pixelUnit": ["", "nm", "nm"]}
    tags = {"Microscope Info Stage Position Stage Alpha": 12.5, "Microscope Info Voltage": 300000.0}
    size, alpha = dm_metadata(dataset, tags)
    assert size == pytest.approx(0.412) and alpha == 12.5
    size, alpha = dm_metadata({"pixelSize": [1.0, 1.0], "pixelUnit": ["", ""]}, {})
    assert size is None and alpha is None
    assert dm_metadata({"pixelSize": [0.3, 0.3], "pixelUnit": ["Å", "Å"]}, {})[0] == pytest.approx(0.3)


@pytest.mark.parametrize("value, unit, expected", [(0.04, "nm", 0.4), (40, "pm", 0.4), (0.4, "Å", 0.4),
                                                   (0.4, "A", 0.4), (4e-5, "µm", 0.4), (4e-5, "micron", 0.4),
                                                   (4e-11, "m", 0.4), (1.0, "pixel", None), (0.0, "nm", None),
                                                   (-1.0, "nm", None), ("x", "nm", None), (1.0, b"nm", 10.0)])
def test_units(value, unit, expected):
    result = to_angstrom(value, unit)
    assert result == (pytest.approx(expected) if expected is not None else None)
