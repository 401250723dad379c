"""Volume readers: NIfTI via nibabel and hand-written MetaImage files, sliced to 2D frames."""

import zlib

import nibabel as nib
import numpy as np
import pytest

from usfmae.io import ReaderConfig, ReadError, detect_kind, iter_frames, list_inputs

X, Y, Z = 20, 12, 6


def volume_xyz(dtype=np.uint8):
    """[X, Y, Z] with value 40*z + 2*y + x, so every slice and its orientation is recognisable."""
    x, y, z = np.meshgrid(np.arange(X), np.arange(Y), np.arange(Z), indexing="ij")
    return (40 * z + 2 * y + x).astype(dtype)


def write_nifti(path, data):
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return path


def mhd_header(dims, element_type, data_file, **extra):
    lines = ["ObjectType = Image", f"NDims = {len(dims)}", "DimSize = " + " ".join(map(str, dims)),
             f"ElementType = {element_type}"]
    lines += [f"{k} = {v}" for k, v in extra.items()]
    lines.append(f"ElementDataFile = {data_file}")
    return ("\n".join(lines) + "\n").encode()


def write_mhd(tmp_path, data_xyz, element_type="MET_UCHAR", name="vol", compressed=False, **extra):
    """A .mhd + .raw pair written by hand: x varies fastest on disk (Fortran order of [X, Y, Z])."""
    payload = data_xyz.tobytes(order="F")
    if compressed:
        payload = zlib.compress(payload)
        extra.update(CompressedData="True", CompressedDataSize=len(payload))
    (tmp_path / f"{name}.raw").write_bytes(payload)
    path = tmp_path / f"{name}.mhd"
    path.write_bytes(mhd_header(data_xyz.shape, element_type, f"{name}.raw", **extra))
    return path


def test_nifti_z_slices_are_y_by_x_images(tmp_path):
    data = volume_xyz()
    frames = list(iter_frames(write_nifti(tmp_path / "v.nii", data)))
    assert [f.index for f in frames] == list(range(Z))
    assert all(f.kind == "volume" and f.image.shape == (Y, X, 3) and f.original_size == (Y, X) for f in frames)
    assert np.array_equal(frames[3].image[..., 0], data[:, :, 3].T)  # uint8 passes through unchanged


def test_nifti_gz_axis_and_stride(tmp_path):
    path = write_nifti(tmp_path / "v.nii.gz", volume_xyz())
    assert detect_kind(path) == "volume"
    frames = list(iter_frames(path, ReaderConfig(volume_axis=0, volume_stride=7)))
    assert [f.index for f in frames] == [0, 7, 14]
    assert frames[0].image.shape == (Z, Y, 3)


def test_nifti_float_slices_are_minmax_normalised_each(tmp_path):
    data = volume_xyz(np.float32) * 0.01 - 3.0
    frames = list(iter_frames(write_nifti(tmp_path / "f.nii", data)))
    for frame in frames:
        assert frame.image.min() == 0 and frame.image.max() == 255


def test_nifti_2d_and_trailing_singleton_axes(tmp_path):
    frames_2d = list(iter_frames(write_nifti(tmp_path / "plane.nii", volume_xyz()[:, :, 2])))
    frames_4d = list(iter_frames(write_nifti(tmp_path / "four.nii", volume_xyz()[..., None])))
    assert len(frames_2d) == 1 and frames_2d[0].image.shape == (Y, X, 3)
    assert len(frames_4d) == Z


def test_nifti_time_series_refused(tmp_path):
    path = write_nifti(tmp_path / "t.nii", np.zeros((4, 4, 3, 2), np.uint8))
    with pytest.raises(ReadError, match=r"t\.nii: NIfTI with 4 non-singleton dimensions"):
        list(iter_frames(path))


def test_truncated_nifti_raises_before_any_slice(tmp_path):
    path = write_nifti(tmp_path / "cut.nii", np.random.default_rng(0).integers(0, 255, (64, 64, 16), dtype=np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    frames = iter_frames(path)
    with pytest.raises(ReadError, match=r"cut\.nii: truncated NIfTI"):
        next(frames)


def test_truncated_nifti_gz_raises_at_the_cut(tmp_path):
    """.nii.gz is inflated slice by slice (bounded memory), so the cut is found where it is: the slices
    before it were read, and the error rejects the whole input (iter_frames' contract)."""
    path = write_nifti(tmp_path / "cut.nii.gz", np.random.default_rng(0).integers(0, 255, (64, 64, 16), dtype=np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ReadError, match=r"cut\.nii\.gz: compressed data is corrupt or cut short in slice (\d+)"):
        list(iter_frames(path))


def test_corrupt_nifti_raises(tmp_path):
    path = tmp_path / "bad.nii"
    path.write_bytes(b"\x00" * 400)
    with pytest.raises(ReadError, match=r"bad\.nii: not readable as NIfTI"):
        list(iter_frames(path))


def test_mhd_raw_matches_nifti_orientation(tmp_path):
    data = volume_xyz()
    mhd = list(iter_frames(write_mhd(tmp_path, data)))
    nii = list(iter_frames(write_nifti(tmp_path / "same.nii", data)))
    assert len(mhd) == Z
    assert all(np.array_equal(a.image, b.image) for a, b in zip(mhd, nii))


def test_mhd_16bit_big_endian(tmp_path):
    data = volume_xyz(np.uint16) * 100
    path = write_mhd(tmp_path, data.astype(">u2"), "MET_USHORT", BinaryDataByteOrderMSB="True")
    frame = list(iter_frames(path))[1]
    assert frame.image[0, 0, 0] == 0 and frame.image[-1, -1, 0] == 255  # slice min at (0,0), max at (Y-1,X-1)


def test_mhd_header_size_and_compression(tmp_path):
    data = volume_xyz(np.int16) - 100
    skipped = tmp_path / "skip.raw"
    skipped.write_bytes(b"JUNKJUNK" + data.tobytes(order="F"))
    path = tmp_path / "skip.mhd"
    path.write_bytes(mhd_header(data.shape, "MET_SHORT", "skip.raw", HeaderSize=8))
    plain = list(iter_frames(path))
    packed = list(iter_frames(write_mhd(tmp_path, data, "MET_SHORT", name="z", compressed=True)))
    assert len(plain) == len(packed) == Z
    assert all(np.array_equal(a.image, b.image) for a, b in zip(plain, packed))


def test_mha_with_local_data_and_2d(tmp_path):
    data = volume_xyz()[:, :, 4]  # [X, Y]
    path = tmp_path / "plane.mha"
    path.write_bytes(mhd_header(data.shape, "MET_UCHAR", "LOCAL") + data.tobytes(order="F"))
    (frame,) = iter_frames(path)
    assert np.array_equal(frame.image[..., 0], data.T)


def test_mhd_rgb_channels(tmp_path):
    rgb = np.random.default_rng(3).integers(0, 256, (Y, X, 3), dtype=np.uint8)  # a [rows, cols, 3] picture
    path = tmp_path / "colour.mha"
    path.write_bytes(mhd_header((X, Y), "MET_UCHAR", "LOCAL", ElementNumberOfChannels=3) + rgb.tobytes())
    (frame,) = iter_frames(path)
    assert np.array_equal(frame.image, rgb)


def test_truncated_raw_raises(tmp_path):
    path = write_mhd(tmp_path, volume_xyz(), name="short")
    raw = tmp_path / "short.raw"
    raw.write_bytes(raw.read_bytes()[:-10])
    with pytest.raises(ReadError, match=r"short\.mhd: truncated MetaImage data"):
        list(iter_frames(path))


@pytest.mark.parametrize("header, reason", [
    (b"ObjectType = Image\nNDims = 3\nDimSize = 4 4\nElementType = MET_UCHAR\nElementDataFile = x.raw\n",
     "unsupported MetaImage geometry"),
    (b"ObjectType = Image\nNDims = 2\nDimSize = 4 4\nElementType = MET_FANCY\nElementDataFile = x.raw\n",
     "unsupported MetaImage ElementType"),
    (b"ObjectType = Image\nNDims = 2\nDimSize = 4 4\nElementType = MET_UCHAR\n", "no ElementDataFile"),
    (b"ObjectType = Image\nNDims = 2\nDimSize = 4 4\nElementType = MET_UCHAR\nElementDataFile = gone.raw\n",
     "data file 'gone.raw' not found"),
])
def test_bad_mhd_headers_raise(tmp_path, header, reason):
    (tmp_path / "x.raw").write_bytes(bytes(16))
    path = tmp_path / "bad.mhd"
    path.write_bytes(header)
    with pytest.raises(ReadError, match=rf"bad\.mhd: .*{reason}"):
        list(iter_frames(path))


def test_list_inputs_skips_raw_companions(tmp_path):
    write_mhd(tmp_path, volume_xyz(), name="vol")
    assert [p.name for p in list_inputs(tmp_path)] == ["vol.mhd"]
