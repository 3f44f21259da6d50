"""Readers and writers: round trips, the GENFIRE layout, angle sidecars and bad input."""

import os

import h5py
import mrcfile
import numpy as np
import pytest
import scipy.io
import tifffile

from napari_aet.geometry import project_atoms, voxel_to_specimen
from napari_aet.io import (read_angles, read_atoms, read_frames, read_tilt_series, read_volume, write_angles,
                           write_atoms, write_tilt_series, write_volume)
from napari_aet.model import AtomModel, InputError, Reconstruction, TiltSeries
from napari_aet.simulate import sample_fept


@pytest.fixture(scope="module")
def sample():
    return sample_fept(size=64, radius=8)


@pytest.fixture(scope="module")
def series(sample):
    return sample.tilt_series


def volume(shape=(20, 24, 28), seed=0):
    return Reconstruction(np.random.default_rng(seed).random(shape, dtype=np.float32), 0.37, "test")


# --- tilt series ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ext", ["tif", "tiff", "mrc", "st", "ali"])
def test_tilt_series_round_trip(tmp_path, series, ext):
    path = tmp_path / f"series.{ext}"
    written = write_tilt_series(path, series)
    assert written == [path, tmp_path / "series.tlt"]
    back = read_tilt_series(path)
    np.testing.assert_array_equal(back.projections, series.projections)
    np.testing.assert_allclose(back.angles, series.angles, atol=1e-8)
    assert back.pixel_size == pytest.approx(series.pixel_size, rel=1e-6)
    assert back.metadata["angles_from"].endswith("series.tlt")


def test_euler_angles_round_trip(tmp_path, series):
    euler = np.stack([np.full(series.n_angles, 10.0), series.angles, np.linspace(-5, 5, series.n_angles)], 1)
    write_tilt_series(tmp_path / "euler.mrc", series.replace(angles=euler))
    np.testing.assert_allclose(read_tilt_series(tmp_path / "euler.mrc").angles, euler, atol=1e-8)


def test_explicit_arguments_override_the_file(tmp_path, series):
    write_tilt_series(tmp_path / "s.tif", series)
    angles = series.angles + 0.5
    back = read_tilt_series(tmp_path / "s.tif", angles=angles, pixel_size=0.25, tilt_axis=12.0)
    np.testing.assert_allclose(back.angles, angles)
    assert (back.pixel_size, back.tilt_axis) == (0.25, 12.0)
    write_angles(tmp_path / "other.txt", angles - 1.0)
    np.testing.assert_allclose(read_tilt_series(tmp_path / "s.tif", angles=tmp_path / "other.txt").angles,
                               angles - 1.0, atol=1e-8)


def test_tiff_pixel_size_from_imagej_and_ome(tmp_path, series):
    data = series.projections[:5]
    np.savetxt(tmp_path / "ij.tlt", series.angles[:5])
    tifffile.imwrite(tmp_path / "ij.tif", data, imagej=True, resolution=(1 / 0.035, 1 / 0.035),
                     metadata={"unit": "nm", "axes": "ZYX"})
    assert read_tilt_series(tmp_path / "ij.tif").pixel_size == pytest.approx(0.35, rel=1e-6)
    tifffile.imwrite(tmp_path / "um.tif", data, imagej=True, resolution=(1e4 / 0.42, 1e4 / 0.42),
                     metadata={"unit": "micron", "axes": "ZYX"})
    assert read_tilt_series(tmp_path / "um.tif", angles=series.angles[:5]).pixel_size == pytest.approx(0.42, rel=1e-5)
    tifffile.imwrite(tmp_path / "ome.ome.tif", data, ome=True,
                     metadata={"axes": "ZYX", "PhysicalSizeX": 0.031, "PhysicalSizeXUnit": "nm"})
    assert read_tilt_series(tmp_path / "ome.ome.tif", angles=series.angles[:5]).pixel_size == pytest.approx(0.31)


def test_npy_needs_a_pixel_size(tmp_path, series):
    np.save(tmp_path / "s.npy", series.projections)
    np.savetxt(tmp_path / "s.rawtlt", series.angles)
    with pytest.raises(InputError, match="s.npy has no pixel size in its metadata: give the pixel size in Å"):
        read_tilt_series(tmp_path / "s.npy")
    back = read_tilt_series(tmp_path / "s.npy", pixel_size=0.4)
    np.testing.assert_array_equal(back.projections, series.projections)
    flagged = read_tilt_series(tmp_path / "s.npy", missing_pixel_size=1.0)
    assert flagged.pixel_size == 1.0 and flagged.metadata["pixel_size_unknown"] is True


@pytest.mark.parametrize("name", ["s.tlt", "s.rawtlt", "s_angles.txt", "s.angles.txt"])
def test_each_sidecar_name_is_found(tmp_path, series, name):
    np.save(tmp_path / "s.npy", series.projections)
    np.savetxt(tmp_path / name, series.angles)
    assert read_tilt_series(tmp_path / "s.npy", pixel_size=1).metadata["angles_from"] == str(tmp_path / name)


def test_sidecar_order_and_missing_angles(tmp_path, series):
    np.save(tmp_path / "s.npy", series.projections)
    with pytest.raises(InputError, match=r"^no tilt angles for s.npy: give --angles FILE or put s.tlt beside it$"):
        read_tilt_series(tmp_path / "s.npy", pixel_size=1)
    np.savetxt(tmp_path / "s.angles.txt", series.angles + 3)
    np.savetxt(tmp_path / "s.rawtlt", series.angles + 2)
    np.savetxt(tmp_path / "s.tlt", series.angles + 1)
    np.testing.assert_allclose(read_tilt_series(tmp_path / "s.npy", pixel_size=1).angles, series.angles + 1)
    os.remove(tmp_path / "s.tlt")
    np.testing.assert_allclose(read_tilt_series(tmp_path / "s.npy", pixel_size=1).angles, series.angles + 2)


def test_a_raw_imod_stack_takes_its_rawtlt_and_disagreeing_sidecars_are_refused(tmp_path, series):
    """An IMOD .st is the raw stack: its .rawtlt (acquisition order) before the .tlt, which belongs
    with the aligned .ali. A .tlt in another order beside them (sorted, say) is refused by name."""
    order = np.argsort(np.abs(series.angles), kind="stable")  # dose-symmetric acquisition
    write_tilt_series(tmp_path / "s.st", series.subset(order))
    np.savetxt(tmp_path / "s.rawtlt", series.angles[order])
    refined = np.random.default_rng(0).normal(scale=0.5, size=len(order))
    np.savetxt(tmp_path / "s.tlt", series.angles[order] + 2.5 + refined)  # tiltalign: an offset, each refined
    read = read_tilt_series(tmp_path / "s.st")
    np.testing.assert_allclose(read.angles, series.angles[order])
    assert read.metadata["angles_from"] == str(tmp_path / "s.rawtlt")
    np.savetxt(tmp_path / "s.tlt", np.sort(series.angles))  # sorted: another order than the images
    with pytest.raises(InputError, match=r"s.tlt and s.rawtlt beside s.st disagree \(by up to .*°"
                                         r" \(projection \d+\)\): give the one whose order matches the images "
                                         "with --angles"):
        read_tilt_series(tmp_path / "s.st")
    np.testing.assert_allclose(read_tilt_series(tmp_path / "s.st", angles=tmp_path / "s.rawtlt").angles,
                               series.angles[order])
    np.savetxt(tmp_path / "s.tlt", series.angles[:5])
    with pytest.raises(InputError, match=r"disagree \(s.tlt holds 5 angles, s.rawtlt \d+\)"):
        read_tilt_series(tmp_path / "s.st")


def test_mrc_angles_from_fei_extended_header(tmp_path, series):
    data = series.projections[:4]
    from mrcfile.dtypes import get_ext_header_dtype

    header = np.zeros(4, dtype=get_ext_header_dtype(b"FEI1"))
    header["Metadata size"], header["Alpha tilt"] = 768, [-30, -10, 10, 30]
    with mrcfile.new(tmp_path / "fei.mrc") as mrc:
        mrc.set_data(data)
        mrc.set_image_stack()
        mrc.voxel_size = 0.5
        mrc.set_extended_header(header)
        mrc.header.exttyp = b"FEI1"
    back = read_tilt_series(tmp_path / "fei.mrc")
    np.testing.assert_allclose(back.angles, [-30, -10, 10, 30])
    assert back.metadata["angles_from"] == "file metadata"


# --- GENFIRE layout ---------------------------------------------------------------------------------------

ATOM = np.array([[6.0, -3.0, 4.0]])  # (x, y, z) Å, no symmetry between x and y
TILTS = np.array([-60.0, -25.0, 0.0, 30.0, 55.0])


def genfire_projections(n=32, sigma=1.0):
    """Projections of ATOM as GENFIRE stores them, written from GENFIRE's own definition: array
    (N, N, n_angles) indexed [x, y, k]; detector coordinates (u, v) = first two rows of its rotation
    matrix R(phi, theta, psi) times (x, y, z), i.e. u = x cos(theta) - z sin(theta), v = y for
    Euler (0, theta, 0); the centre is index N // 2."""
    grid = np.arange(n) - n // 2
    theta = np.deg2rad(TILTS)
    u = ATOM[0, 0] * np.cos(theta) - ATOM[0, 2] * np.sin(theta)
    v = np.full_like(u, ATOM[0, 1])
    gx = np.exp(-(grid[:, None] - u) ** 2 / (2 * sigma**2))  # (x index, angle)
    gy = np.exp(-(grid[:, None] - v) ** 2 / (2 * sigma**2))  # (y index, angle)
    return np.einsum("ik,jk->ijk", gx, gy).astype(np.float32)


def peak(image):
    return np.unravel_index(np.argmax(image), image.shape)


@pytest.mark.parametrize("fmt", ["npy", "mat", "mat73"])
def test_genfire_layout_matches_our_geometry(tmp_path, fmt):
    data = genfire_projections()
    euler = np.stack([np.zeros_like(TILTS), TILTS, np.zeros_like(TILTS)], 1)
    np.savetxt(tmp_path / "angles.txt", euler)
    path = tmp_path / f"projections.{fmt[:3]}"
    if fmt == "npy":
        np.save(path, data)
    elif fmt == "mat":
        scipy.io.savemat(path, {"projections": data})
    else:  # MATLAB v7.3: HDF5 with axes stored reversed
        with h5py.File(path, "w", userblock_size=512) as handle:
            handle.create_dataset("projections", data=data.T)
        with open(path, "r+b") as handle:
            handle.write(b"MATLAB 7.3 MAT-file".ljust(124) + b"\x00\x02IM")
    auto = read_tilt_series(path, angles=tmp_path / "angles.txt", pixel_size=1.0)
    explicit = read_tilt_series(path, angles=tmp_path / "angles.txt", pixel_size=1.0, layout="genfire")
    np.testing.assert_array_equal(auto.projections, explicit.projections)
    assert auto.metadata["layout"] == "genfire (x, y, angles)"  # detected, and said
    if fmt == "npy":  # the same images as a (y, x, angles) stack
        np.save(tmp_path / "yx.npy", data.transpose(1, 0, 2))
        last = read_tilt_series(tmp_path / "yx.npy", angles=tmp_path / "angles.txt", pixel_size=1.0,
                                layout="angles-last")
        np.testing.assert_array_equal(last.projections, auto.projections)
    ours = project_atoms(ATOM, np.ones(1), 1.0, TILTS, (32, 32), 1.0)
    for measured, expected in zip(auto.projections, ours):
        assert peak(measured) == peak(expected)
    assert auto.projections.shape == (5, 32, 32)


def test_genfire_volume_layout(tmp_path):
    n = 24
    genfire_volume = np.zeros((n, n, n), np.float32)  # indexed [x, y, z]
    x, y, z = (ATOM[0] + n // 2).astype(int)
    genfire_volume[x, y, z] = 1.0
    np.save(tmp_path / "rec.npy", genfire_volume)
    with mrcfile.new(tmp_path / "rec.mrc") as mrc:  # the byte order of GENFIRE's own writeMRC
        mrc.set_data(genfire_volume)
    for path in (tmp_path / "rec.npy", tmp_path / "rec.mrc"):
        rec = read_volume(path, voxel_size=1.0, layout="genfire")
        np.testing.assert_allclose(voxel_to_specimen([peak(rec.volume)], rec.volume.shape, 1.0), ATOM)


def test_unknown_layout(tmp_path, series):
    write_tilt_series(tmp_path / "s.mrc", series)
    with pytest.raises(InputError, match="unknown layout 'xyz'"):
        read_tilt_series(tmp_path / "s.mrc", layout="xyz")


# --- frames -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ext", ["npy", "tif", "mrc"])
def test_frames(tmp_path, ext):
    frames = np.random.default_rng(1).random((3, 4, 16, 16), dtype=np.float32)
    path = tmp_path / f"frames.{ext}"
    if ext == "npy":
        np.save(path, frames)
    elif ext == "tif":
        tifffile.imwrite(path, frames, imagej=True, metadata={"axes": "TZYX"})
    else:
        with mrcfile.new(path) as mrc:
            mrc.set_data(frames)
    np.testing.assert_array_equal(read_frames(path), frames)
    np.savetxt(tmp_path / "frames.tlt", [-10, 0, 10])
    series = read_tilt_series(path, pixel_size=1)  # 4D: frames registered and summed
    assert series.projections.shape == (3, 16, 16) and series.metadata["n_frames"] == 4
    assert np.shape(series.metadata["frame_drift"]) == (3, 4, 2)
    np.save(tmp_path / "swapped.npy", frames.swapaxes(0, 1))  # (frames, angles, y, x): told by the angle count
    swapped = read_tilt_series(tmp_path / "swapped.npy", angles=[-10, 0, 10], pixel_size=1)
    np.testing.assert_array_equal(swapped.projections, series.projections)


def test_frame_stacks_are_registered_on_reading(tmp_path):
    from napari_aet.simulate import fcc_particle, simulate_tilt_series

    sim = simulate_tilt_series(fcc_particle(radius=7.0, seed=2), angles=[-40.0, 0.0, 40.0], shape=(48, 48),
                               dose=2000.0, n_frames=4, frame_drift=0.8, max_shift=0.0, seed=4)
    np.save(tmp_path / "frames.npy", sim.frames)
    series = read_tilt_series(tmp_path / "frames.npy", angles=[-40, 0, 40], pixel_size=0.4)
    drift = np.asarray(series.metadata["frame_drift"])
    assert np.sqrt(np.mean((drift - sim.frame_drift) ** 2)) < 0.15  # px
    assert np.allclose(series.projections.sum(axis=(1, 2)), sim.frames.sum(axis=(1, 2, 3)), rtol=0.02)


def test_frames_need_4d(tmp_path, series):
    np.save(tmp_path / "s.npy", series.projections)
    with pytest.raises(InputError, match=r"expected frames shaped \(n_angles, n_frames, ny, nx\)"):
        read_frames(tmp_path / "s.npy")


# --- angle files ------------------------------------------------------------------------------------------

def test_read_angles_formats(tmp_path):
    (tmp_path / "a.tlt").write_text("# tilts\n-60\n\n -30.5\n0\n30 # zero-loss\n")
    np.testing.assert_allclose(read_angles(tmp_path / "a.tlt"), [-60, -30.5, 0, 30])
    (tmp_path / "e.txt").write_text("0 -60 0\n0, 0, 0\n10 60 5\n")
    np.testing.assert_allclose(read_angles(tmp_path / "e.txt"), [[0, -60, 0], [0, 0, 0], [10, 60, 5]])
    euler = np.arange(12.0).reshape(4, 3)
    np.save(tmp_path / "e.npy", euler)
    scipy.io.savemat(tmp_path / "e.mat", {"angles": euler.T})  # MATLAB users often store 3 x n
    np.testing.assert_array_equal(read_angles(tmp_path / "e.npy"), euler)
    np.testing.assert_array_equal(read_angles(tmp_path / "e.mat"), euler)
    (tmp_path / "single.txt").write_text("0 -60 0\n0 -30 0\n0 0 0\n0 30 0\n")  # GENFIRE's single-axis tilts
    np.testing.assert_array_equal(read_angles(tmp_path / "single.txt"), [-60, -30, 0, 30])


def test_bad_angle_files(tmp_path):
    (tmp_path / "bad.tlt").write_text("-60\n-30\nthirty\n")
    with pytest.raises(InputError, match=r"bad.tlt, line 3: 'thirty' is not a number"):
        read_angles(tmp_path / "bad.tlt")
    (tmp_path / "mixed.txt").write_text("0 10 0\n20\n")
    with pytest.raises(InputError, match="line 2: 1 values where earlier lines have 3"):
        read_angles(tmp_path / "mixed.txt")
    (tmp_path / "empty.tlt").write_text("# nothing\n")
    with pytest.raises(InputError, match="holds no angles"):
        read_angles(tmp_path / "empty.tlt")
    (tmp_path / "nan.tlt").write_text("1\nnan\n")
    with pytest.raises(InputError, match="NaN or Inf"):
        read_angles(tmp_path / "nan.tlt")
    np.savetxt(tmp_path / "radians.tlt", np.radians(np.linspace(-70, 70, 25)))
    with pytest.raises(InputError, match=r"span only 2.44° \(-1.22 to 1.22\): are they in radians"):
        read_angles(tmp_path / "radians.tlt")
    np.savetxt(tmp_path / "indexed.txt", np.column_stack([np.arange(25), np.linspace(-70, 70, 25)]))
    with pytest.raises(InputError, match="remove any index or dose column"):
        read_angles(tmp_path / "indexed.txt")
    np.savetxt(tmp_path / "dose.txt", np.column_stack([np.arange(1, 26), np.linspace(-70, 70, 25), np.ones(25)]))
    with pytest.raises(InputError, match="the first column counts 1, 2, 3 …, an index, not Euler angles"):
        read_angles(tmp_path / "dose.txt")


def test_negative_values_wrapped_round_in_unsigned_integers_are_read_back(tmp_path, series):
    signed = np.round(series.projections - 20).astype(np.int16)  # background subtracted: negatives
    tifffile.imwrite(tmp_path / "wrapped.tif", signed.view(np.uint16))  # saved as unsigned
    with pytest.warns(UserWarning, match="negative values saved as unsigned 16-bit"):
        read = read_tilt_series(tmp_path / "wrapped.tif", angles=series.angles, pixel_size=0.4)
    np.testing.assert_array_equal(read.projections, signed)
    bright = (signed.astype(np.int32) + 40000).astype(np.uint16)  # a real offset beyond 32767: kept
    tifffile.imwrite(tmp_path / "bright.tif", bright)
    np.testing.assert_array_equal(read_tilt_series(tmp_path / "bright.tif", angles=series.angles,
                                                   pixel_size=0.4).projections, bright)


def test_detector_channels_are_refused_and_frames_saved_as_channels_are_frames(tmp_path, series):
    haadf = series.projections[:5]
    both = np.stack([haadf, haadf.max() - haadf], axis=1)  # HAADF and BF (inverted contrast) per tilt
    tifffile.imwrite(tmp_path / "two.tif", both, imagej=True, metadata={"axes": "ZCYX"})
    with pytest.raises(InputError, match="two.tif holds 2 channels per image .axes ZCYX. that are not frames"):
        read_tilt_series(tmp_path / "two.tif", angles=np.linspace(-60, 60, 5), pixel_size=0.4)
    frames = np.stack([haadf, haadf], axis=1)  # two frames per tilt, stored as ImageJ channels
    tifffile.imwrite(tmp_path / "frames.tif", frames, imagej=True, metadata={"axes": "ZCYX"})
    read = read_tilt_series(tmp_path / "frames.tif", angles=np.linspace(-60, 60, 5), pixel_size=0.4)
    assert read.metadata["n_frames"] == 2 and read.n_angles == 5


# --- volumes ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ext", ["mrc", "rec", "tif", "tiff"])
def test_volume_round_trip(tmp_path, ext):
    rec = volume()
    assert write_volume(tmp_path / f"v.{ext}", rec) == tmp_path / f"v.{ext}"
    back = read_volume(tmp_path / f"v.{ext}")
    np.testing.assert_array_equal(back.volume, rec.volume)
    assert back.voxel_size == pytest.approx(0.37, rel=1e-6)


def test_volume_mrc_header_says_volume(tmp_path):
    write_volume(tmp_path / "v.mrc", volume())
    with mrcfile.open(tmp_path / "v.mrc") as mrc:
        assert int(mrc.header.ispg) == 1
        assert float(mrc.voxel_size.x) == pytest.approx(0.37, rel=1e-6)


def test_volume_mrc_origin_puts_the_rotation_centre_at_zero(tmp_path):
    """ChimeraX and EMAN place voxel i at origin + i * voxel size: voxel n // 2 must land at 0 Å,
    where atoms.csv has the rotation centre."""
    rec = volume(shape=(21, 24, 27))
    write_volume(tmp_path / "v.mrc", rec)
    with mrcfile.open(tmp_path / "v.mrc") as mrc:
        origin = [float(mrc.header.origin[axis]) for axis in "xyz"]
        labels = b" ".join(mrc.header.label[:mrc.header.nlabl]).decode()
    assert "napari-aet" in labels and "test reconstruction" in labels and "rotation centre at 0 A" in labels
    for start, n in zip(origin, (27, 24, 21)):
        assert start + (n // 2) * 0.37 == pytest.approx(0, abs=1e-5) and start < 0
    np.testing.assert_array_equal(read_volume(tmp_path / "v.mrc").volume, rec.volume)  # the origin changes no data


def test_volume_needs_3d_and_a_voxel_size(tmp_path):
    np.save(tmp_path / "flat.npy", np.ones((8, 8), np.float32))
    with pytest.raises(InputError, match=r"flat.npy holds a 2D array of shape \(8, 8\): expected a volume"):
        read_volume(tmp_path / "flat.npy", voxel_size=1)
    np.save(tmp_path / "cube.npy", np.ones((8, 8, 8), np.float32))
    with pytest.raises(InputError, match="cube.npy has no voxel size in its metadata"):
        read_volume(tmp_path / "cube.npy")
    assert read_volume(tmp_path / "cube.npy", missing_voxel_size=1.0).metadata["voxel_size_unknown"]


# --- atoms ------------------------------------------------------------------------------------------------

def atoms_with_columns(sample):
    atoms = sample.atoms
    n = len(atoms)
    species = atoms.species.copy()
    species[:3] = ""  # unclassified
    rng = np.random.default_rng(2)
    intensity = rng.random(n)
    intensity[1] = np.nan  # e.g. an atom the refinement added has no traced intensity
    return AtomModel(atoms.positions, species, {**atoms.features, "intensity": intensity,
                                                "label": np.arange(n) % 5, "site": np.array(["s"] * n, object),
                                                "reason": np.array(["", "residual peak"] * (n // 2) + [""] * (n % 2),
                                                                   object)})


@pytest.mark.parametrize("ext", ["csv", "xyz"])
def test_atoms_round_trip(tmp_path, sample, ext):
    atoms = atoms_with_columns(sample)
    write_atoms(tmp_path / f"a.{ext}", atoms)
    back = read_atoms(tmp_path / f"a.{ext}")
    np.testing.assert_allclose(back.positions, atoms.positions, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(back.species, atoms.species)
    assert list(back.features) == list(atoms.features)
    for name, column in atoms.features.items():
        np.testing.assert_array_equal(back.features[name], column)
        assert back.features[name].dtype.kind == column.dtype.kind


def test_csv_columns_first(tmp_path, sample):
    write_atoms(tmp_path / "a.csv", sample.atoms)
    assert (tmp_path / "a.csv").read_text().splitlines()[0].startswith("x,y,z,element,")


def test_extended_xyz_layout(tmp_path, sample):
    write_atoms(tmp_path / "a.xyz", atoms_with_columns(sample))
    lines = (tmp_path / "a.xyz").read_text().splitlines()
    assert int(lines[0]) == len(sample.atoms) == len(lines) - 2
    assert lines[1].startswith("Properties=species:S:1:pos:R:3:ordered:L:1:antisite:L:1:edited:L:1:locked:L:1:"
                               "intensity:R:1:label:I:1:site:S:1:reason:S:1 pbc=\"F F F\"")
    assert lines[2].split()[0] == "X" and lines[5].split()[0] in ("Fe", "Pt")
    assert lines[2].split()[-1] == "-" and lines[3].split()[-1] == "residual_peak"  # empty text, a space


def test_xyz_refuses_text_it_cannot_store_unchanged(tmp_path, sample):
    atoms = sample.atoms.with_features(note=np.array(["a_b"] * len(sample.atoms), object))
    with pytest.raises(InputError, match="'note' holds text with an underscore"):
        write_atoms(tmp_path / "a.xyz", atoms)


def test_ase_reads_our_xyz(tmp_path, sample):
    ase_io = pytest.importorskip("ase.io")
    atoms = atoms_with_columns(sample)
    write_atoms(tmp_path / "a.xyz", atoms)
    theirs = ase_io.read(tmp_path / "a.xyz")
    np.testing.assert_allclose(theirs.positions, atoms.positions, atol=1e-12)
    assert theirs.get_chemical_symbols() == [s or "X" for s in atoms.species]
    np.testing.assert_array_equal(theirs.arrays["intensity"], atoms.features["intensity"])
    np.testing.assert_array_equal(theirs.arrays["ordered"], atoms.features["ordered"])
    ase_io.write(tmp_path / "ase.xyz", theirs, format="extxyz")
    back = read_atoms(tmp_path / "ase.xyz")
    np.testing.assert_allclose(back.positions, atoms.positions, atol=1e-7)
    np.testing.assert_array_equal(back.species, atoms.species)
    np.testing.assert_array_equal(back.features["label"], atoms.features["label"])


def test_plain_xyz(tmp_path):
    (tmp_path / "p.xyz").write_text("2\nplain\nPt 0.0 1.0 2.0\nFe -1.5 0 3\n")
    atoms = read_atoms(tmp_path / "p.xyz")
    np.testing.assert_array_equal(atoms.positions, [[0, 1, 2], [-1.5, 0, 3]])
    assert list(atoms.species) == ["Pt", "Fe"]


def test_bad_atom_files(tmp_path):
    (tmp_path / "noz.csv").write_text("x,y,element\n1,2,Fe\n")
    with pytest.raises(InputError, match=r"noz.csv: atom table lacks column\(s\) \['z'\]"):
        read_atoms(tmp_path / "noz.csv")
    (tmp_path / "xx.csv").write_text("x,y,z,element\n1,2,3,Fe\n1,2,4,Xx\n")
    with pytest.raises(InputError, match="unknown element symbol"):
        read_atoms(tmp_path / "xx.csv")
    (tmp_path / "xx.xyz").write_text("1\n\nQq 0 0 0\n")
    with pytest.raises(InputError, match="xx.xyz: unknown element symbol"):
        read_atoms(tmp_path / "xx.xyz")
    (tmp_path / "text.csv").write_text("x,y,z\n1,2,three\n")
    with pytest.raises(InputError, match="text.csv: the x, y, z columns must hold numbers"):
        read_atoms(tmp_path / "text.csv")
    (tmp_path / "short.xyz").write_text("3\n\nFe 0 0 0\n")
    with pytest.raises(InputError, match="announces 3 atoms but holds 1"):
        read_atoms(tmp_path / "short.xyz")
    (tmp_path / "bad.xyz").write_text("many\n")
    with pytest.raises(InputError, match="bad.xyz is not an XYZ file"):
        read_atoms(tmp_path / "bad.xyz")


# --- bad input, common to every reader --------------------------------------------------------------------

def test_missing_file(tmp_path):
    for reader in (read_tilt_series, read_volume, read_atoms, read_angles, read_frames):
        with pytest.raises(InputError, match=r"nothere.mrc does not exist: check the name and directory"):
            reader(tmp_path / "nothere.mrc")


@pytest.mark.parametrize("ext", ["mrc", "tif", "npy", "mat", "emd", "dm3", "dm4"])
def test_corrupt_file(tmp_path, ext):
    (tmp_path / f"junk.{ext}").write_text("this is a text file, not image data\n" * 20)
    with pytest.raises(InputError, match=rf"^cannot read junk.{ext} as \w+ data \(.*\): is the file complete"):
        read_tilt_series(tmp_path / f"junk.{ext}", angles=[0, 1], pixel_size=1)


def test_unknown_extension(tmp_path):
    (tmp_path / "a.png").write_bytes(b"\x89PNG")
    with pytest.raises(InputError, match=r"unknown extension \.png, expected one of \.ali, \.dm3"):
        read_tilt_series(tmp_path / "a.png")
    with pytest.raises(InputError, match=r"cannot handle v.raw as a volume: unknown extension \.raw"):
        write_volume(tmp_path / "v.raw", volume())


def test_single_image_is_not_a_stack(tmp_path):
    np.save(tmp_path / "one.npy", np.ones((32, 32), np.float32))
    with pytest.raises(InputError, match=r"one.npy holds a 2D array of shape \(32, 32\): expected a stack"):
        read_tilt_series(tmp_path / "one.npy", angles=[0.0], pixel_size=1)


def test_angle_count_mismatch(tmp_path, series):
    write_tilt_series(tmp_path / "s.mrc", series)
    np.savetxt(tmp_path / "s.tlt", series.angles[:-1])
    with pytest.raises(InputError, match=r"s.mrc holds 51 projections but 50 angles were found \(.*s.tlt\)"):
        read_tilt_series(tmp_path / "s.mrc")


def test_nan_pixels(tmp_path, series):
    data = series.projections.copy()
    data[3, 4, 5] = np.nan
    data[7, 1, 1] = np.inf
    np.save(tmp_path / "nan.npy", data)
    with pytest.raises(InputError, match="nan.npy: projections contains 2 NaN or Inf values"):
        read_tilt_series(tmp_path / "nan.npy", angles=series.angles, pixel_size=1)


@pytest.mark.parametrize("size", [0.0, -0.4])
def test_bad_pixel_size(tmp_path, series, size):
    write_tilt_series(tmp_path / "s.tif", series)
    with pytest.raises(InputError, match="pixel size must be a positive number of Å"):
        read_tilt_series(tmp_path / "s.tif", pixel_size=size)


def test_unset_mrc_voxel_size_counts_as_missing(tmp_path, series):
    with mrcfile.new(tmp_path / "s.mrc") as mrc:
        mrc.set_data(series.projections)
    np.savetxt(tmp_path / "s.tlt", series.angles)
    with pytest.raises(InputError, match="s.mrc has no pixel size"):
        read_tilt_series(tmp_path / "s.mrc")
    with mrcfile.open(tmp_path / "s.mrc", "r+") as mrc:
        mrc.voxel_size = 1.0  # what many programs write when they do not know it
    with pytest.warns(UserWarning, match="gives 1 Å per pixel, the value many programs write when the pixel size"):
        assert read_tilt_series(tmp_path / "s.mrc").pixel_size == 1.0


# --- writing: unwritable places and atomicity -------------------------------------------------------------

WRITERS = [(write_tilt_series, "s.mrc", "series"), (write_volume, "v.mrc", "volume"),
           (write_atoms, "a.csv", "atoms"), (write_angles, "a.tlt", "angles")]


def payload(kind, series, sample):
    return {"series": series, "volume": volume(), "atoms": sample.atoms, "angles": series.angles}[kind]


@pytest.mark.parametrize("writer, name, kind", WRITERS)
def test_write_to_missing_directory(tmp_path, series, sample, writer, name, kind):
    with pytest.raises(InputError, match=rf"cannot write .*{name}: directory .*nowhere does not exist"):
        writer(tmp_path / "nowhere" / name, payload(kind, series, sample))


@pytest.mark.parametrize("writer, name, kind", WRITERS)
def test_write_to_read_only_directory(series, sample, writer, name, kind):
    # /sys refuses new files even to root, unlike a chmod-ed temporary directory
    with pytest.raises(InputError, match=rf"cannot write /sys/{name}: directory /sys is not writable"):
        writer(f"/sys/{name}", payload(kind, series, sample))


def test_failed_write_leaves_nothing_behind(tmp_path, series, monkeypatch):
    target = tmp_path / "s.tif"
    target.write_bytes(b"previous result")

    def crash(path, data, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"half a TIFF")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tifffile, "imwrite", crash)
    with pytest.raises(InputError, match="cannot write .*s.tif: No space left on device"):
        write_tilt_series(target, series)
    assert target.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.tif"]


def test_interrupted_write_leaves_nothing_behind(tmp_path, sample, monkeypatch):
    from pathlib import Path

    def interrupt(path, text, **kwargs):
        with open(path, "w") as handle:
            handle.write(text[:100])
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_atoms(tmp_path / "a.csv", sample.atoms)
    assert list(tmp_path.iterdir()) == []


def test_written_files_follow_the_umask(tmp_path, sample):
    old = os.umask(0o022)
    try:
        write_atoms(tmp_path / "a.csv", sample.atoms)
    finally:
        os.umask(old)
    assert (tmp_path / "a.csv").stat().st_mode & 0o777 == 0o644


def test_tilt_series_model_is_checked(tmp_path, series):
    """Duplicate angles are caught by TiltSeries and reported with the file name."""
    np.save(tmp_path / "dup.npy", series.projections[:3])
    with pytest.raises(InputError, match="dup.npy: tilt angles contain duplicates"):
        read_tilt_series(tmp_path / "dup.npy", angles=[0, 0, 10], pixel_size=1)
    assert isinstance(read_tilt_series(tmp_path / "dup.npy", angles=[0, 5, 10], pixel_size=1), TiltSeries)
