"""DICOM reader on pydicom's real ultrasound test files and on generated datasets."""

import dataclasses
import shutil

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import convert_color_space
from pydicom.uid import ExplicitVRLittleEndian, UltrasoundMultiFrameImageStorage, generate_uid

from usfmae.io import Frame, ReaderConfig, ReadError, detect_kind, iter_frames


def example_file(name):
    return get_testdata_file(name)


def write_dicom(path, pixels, photometric, bits_stored=8, **tags):
    """A minimal ultrasound DICOM holding `pixels` ([F,] H, W[, 3]) plus optional extra tags."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = UltrasoundMultiFrameImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = UltrasoundMultiFrameImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.PatientName = "Doe^Jane"
    ds.Modality = "US"
    ds.set_pixel_data(pixels, photometric, bits_stored)
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_palette_color_applies_the_lut():
    ds = pydicom.dcmread(example_file("examples_palette.dcm"))
    frames = list(iter_frames(example_file("examples_palette.dcm")))
    assert len(frames) == 1 and frames[0].image.shape == (ds.Rows, ds.Columns, 3)
    # Expected colours straight from the LUT: 16-bit entries, top byte kept.
    index = ds.pixel_array
    red = np.frombuffer(ds.RedPaletteColorLookupTableData, "<u2")
    first = ds.RedPaletteColorLookupTableDescriptor[1]
    expected_red = (red[np.clip(index.astype(int) - first, 0, len(red) - 1)] >> 8).astype(np.uint8)
    assert np.array_equal(frames[0].image[..., 0], expected_red)
    assert not np.array_equal(frames[0].image[..., 0], frames[0].image[..., 2])  # really colour


def test_rgb_single_frame_is_unchanged():
    ds = pydicom.dcmread(example_file("examples_rgb_color.dcm"))
    (frame,) = iter_frames(example_file("examples_rgb_color.dcm"))
    assert np.array_equal(frame.image, ds.pixel_array)
    assert frame.kind == "dicom" and frame.index == 0 and frame.original_size == (240, 320)


def test_jpeg2k_compressed_decodes_to_same_picture_as_rgb_example():
    (j2k,) = iter_frames(example_file("examples_jpeg2k.dcm"))
    (rgb,) = iter_frames(example_file("examples_rgb_color.dcm"))
    assert j2k.image.shape == (480, 640, 3)
    # Same scene at twice the size: compare after downsampling; a missed colour transform fails this.
    small = j2k.image.reshape(240, 2, 320, 2, 3).mean(axis=(1, 3))
    assert np.abs(small - rgb.image).mean() < 8


def test_ybr_cine_30_frames_at_30fps_keeps_3_frames_as_rgb():
    path = example_file("examples_ybr_color.dcm")
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert ds.NumberOfFrames == 30 and float(ds.FrameTime) == pytest.approx(33.333)  # 30 fps, 1 s
    frames = list(iter_frames(path))
    assert [f.index for f in frames] == [0, 10, 20]  # 1 second at 3 frames per second
    # pydicom already converts YBR_FULL_422 to RGB: a second conversion would shift the colours.
    reference = convert_color_space(pydicom.pixels.pixel_array(path, index=10, raw=True), "YBR_FULL", "RGB")
    assert np.array_equal(frames[1].image, reference)


def test_uncompressed_ybr_full_converted_once(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (16, 20, 3), dtype=np.uint8)
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    (frame,) = iter_frames(write_dicom(tmp_path / "ybr.dcm", ybr, "YBR_FULL"))
    assert np.abs(frame.image.astype(int) - rgb).max() <= 2  # rounding of the two colour transforms


def test_monochrome1_is_inverted_and_16bit_stretched(tmp_path):
    gray = np.arange(16 * 20, dtype=np.uint16).reshape(16, 20) * 10  # 0..3190, 12-bit range
    (mono2,) = iter_frames(write_dicom(tmp_path / "m2.dcm", gray, "MONOCHROME2", bits_stored=12))
    (mono1,) = iter_frames(write_dicom(tmp_path / "m1.dcm", gray, "MONOCHROME1", bits_stored=12))
    assert mono2.image[0, 0, 0] == 0 and mono2.image[-1, -1, 0] == 255
    assert np.array_equal(mono1.image, 255 - mono2.image)


def test_cine_rate_from_cine_rate_tag(tmp_path):
    cine = np.stack([np.full((8, 8), 10 * i, np.uint8) for i in range(12)])
    path = write_dicom(tmp_path / "cine.dcm", cine, "MONOCHROME2", NumberOfFrames=12, CineRate=6)
    frames = list(iter_frames(path))
    assert [f.index for f in frames] == [0, 2, 4, 6, 8, 10]
    assert [int(f.image[0, 0, 0]) for f in frames] == [0, 20, 40, 60, 80, 100]


def test_cine_without_rate_uses_fallback_and_warns(tmp_path, caplog):
    cine = np.stack([np.full((8, 8), i, np.uint8) for i in range(25)])
    path = write_dicom(tmp_path / "norate.dcm", cine, "MONOCHROME2", NumberOfFrames=25)
    frames = list(iter_frames(path, ReaderConfig(fallback_source_fps=10.0)))
    assert [f.index for f in frames] == [0, 3, 7, 10, 13, 17, 20, 23]  # nearest to k/3 s at 10 fps
    assert "norate.dcm: DICOM cine states no usable frame rate" in caplog.text


def test_frames_carry_no_tag_values(tmp_path):
    assert [f.name for f in dataclasses.fields(Frame)] == ["image", "index", "kind", "original_size"]
    (frame,) = iter_frames(write_dicom(tmp_path / "p.dcm", np.zeros((8, 8), np.uint8), "MONOCHROME2"))
    assert "Doe" not in repr(dataclasses.asdict(frame))


def test_extensionless_dicom_detected_by_content(tmp_path):
    path = tmp_path / "IM000123"
    shutil.copy(example_file("examples_rgb_color.dcm"), path)
    assert detect_kind(path) == "dicom"
    assert len(list(iter_frames(path))) == 1


def test_truncated_native_dicom_raises(tmp_path):
    data = open(example_file("examples_rgb_color.dcm"), "rb").read()
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ReadError, match=r"cut\.dcm: "):
        list(iter_frames(path))


@pytest.mark.parametrize("kept", [0.5, 0.95])
def test_truncated_compressed_cine_raises(tmp_path, kept):
    # At 95% the three sampled frames are intact; only unsampled tail frames are cut.
    data = open(example_file("examples_ybr_color.dcm"), "rb").read()
    path = tmp_path / "cutcine.dcm"
    path.write_bytes(data[: int(len(data) * kept)])
    with pytest.raises(ReadError, match=r"cutcine\.dcm: DICOM truncated"):
        list(iter_frames(path))


def test_cine_with_fewer_frames_than_declared_raises(tmp_path):
    ds = pydicom.dcmread(example_file("examples_ybr_color.dcm"))
    ds.NumberOfFrames = 35  # the file holds 30 compressed frames
    path = tmp_path / "short.dcm"
    ds.save_as(path)
    with pytest.raises(ReadError, match=r"short\.dcm: truncated DICOM: 30 of 35 compressed frames"):
        list(iter_frames(path))


def test_native_cine_cut_in_unsampled_tail_raises(tmp_path):
    cine = np.zeros((30, 16, 16), np.uint8)
    path = write_dicom(tmp_path / "tail.dcm", cine, "MONOCHROME2", NumberOfFrames=30, FrameTime=33.3)
    path.write_bytes(path.read_bytes()[:-100])  # frames 0, 10, 20 intact; frame 29 cut
    with pytest.raises(ReadError, match=r"tail\.dcm: truncated DICOM"):
        list(iter_frames(path))


def test_dicom_without_pixels_raises(tmp_path):
    ds = pydicom.dcmread(example_file("examples_rgb_color.dcm"))
    for keyword in ("PixelData", "Rows", "Columns", "PhotometricInterpretation"):
        delattr(ds, keyword)
    path = tmp_path / "nopix.dcm"
    ds.save_as(path)
    with pytest.raises(ReadError, match=r"nopix\.dcm: DICOM has no image pixel module"):
        list(iter_frames(path))


def test_garbage_with_dicom_extension_raises(tmp_path):
    path = tmp_path / "junk.dcm"
    path.write_bytes(b"\x00" * 128 + b"DICM" + b"\xff" * 40)
    with pytest.raises(ReadError, match=r"junk\.dcm"):
        list(iter_frames(path))


def test_empty_dicom_raises(tmp_path):
    path = tmp_path / "empty.dcm"
    path.write_bytes(b"")
    with pytest.raises(ReadError, match=r"empty\.dcm: empty file"):
        list(iter_frames(path))
