"""Still-image reader: every format and bit depth comes out as [H, W, 3] uint8 RGB."""

import cv2
import numpy as np
import pytest
from PIL import Image

from usfmae.io import Frame, ReaderConfig, ReadError, detect_kind, iter_frames

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (24, 40, 3), dtype=np.uint8)  # [H, W, 3]
GRAY = RNG.integers(0, 256, (24, 40), dtype=np.uint8)


def only_frame(path, cfg=None) -> Frame:
    frames = list(iter_frames(path, cfg))
    assert len(frames) == 1
    frame = frames[0]
    assert frame.image.dtype == np.uint8 and frame.image.shape == (24, 40, 3)
    assert frame.kind == "image" and frame.index == 0 and frame.original_size == (24, 40)
    return frame


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tif", ".tiff"])
def test_lossless_rgb_round_trips_in_rgb_order(tmp_path, ext):
    path = tmp_path / f"img{ext}"
    Image.fromarray(RGB).save(path)
    assert np.array_equal(only_frame(path).image, RGB)


@pytest.mark.parametrize("ext", [".jpg", ".jpeg"])
def test_jpeg_is_rgb_not_bgr(tmp_path, ext):
    red = np.zeros((24, 40, 3), np.uint8)
    red[..., 0] = 220  # pure red: a BGR mix-up would put it in channel 2
    path = tmp_path / f"img{ext}"
    Image.fromarray(red).save(path, quality=95)
    image = only_frame(path).image
    assert image[..., 0].mean() > 200 and image[..., 2].mean() < 20


def test_gray_png_becomes_three_equal_channels(tmp_path):
    path = tmp_path / "g.png"
    Image.fromarray(GRAY).save(path)
    image = only_frame(path).image
    assert all(np.array_equal(image[..., c], GRAY) for c in range(3))


def test_rgba_png_drops_alpha(tmp_path):
    rgba = np.dstack([RGB, np.full((24, 40), 7, np.uint8)])
    path = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(path)
    assert np.array_equal(only_frame(path).image, RGB)


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tif"])
def test_palette_image_expands_to_its_colours(tmp_path, ext):
    palette = [10, 20, 250, 200, 30, 40, 0, 255, 0] + [0] * (256 * 3 - 9)  # asymmetric colours
    indices = RNG.integers(0, 3, (24, 40), dtype=np.uint8)
    img = Image.fromarray(indices, "P")
    img.putpalette(palette)
    path = tmp_path / f"p{ext}"
    img.save(path)
    expected = np.array(palette[:9], np.uint8).reshape(3, 3)[indices]
    assert np.array_equal(only_frame(path).image, expected)


def test_16bit_gray_png_is_minmax_stretched_by_default(tmp_path):
    gray16 = np.linspace(1000, 5000, 24 * 40).reshape(24, 40).astype(np.uint16)  # 12-bit-like range
    path = tmp_path / "g16.png"
    cv2.imwrite(str(path), gray16)
    image = only_frame(path).image
    assert image.min() == 0 and image.max() == 255
    expected = np.rint((gray16 - 1000) * 255.0 / 4000).astype(np.uint8)
    assert np.abs(image[..., 0].astype(int) - expected).max() <= 1


def test_16bit_rgb_png_shift_mode_keeps_top_byte(tmp_path):
    rgb16 = RNG.integers(0, 65536, (24, 40, 3), dtype=np.uint16)
    path = tmp_path / "c16.png"
    cv2.imwrite(str(path), rgb16[..., ::-1])  # cv2 writes BGR
    image = only_frame(path, ReaderConfig(high_bit_depth="shift")).image
    assert np.array_equal(image, (rgb16 >> 8).astype(np.uint8))


def test_multipage_tiff_yields_every_page(tmp_path):
    pages = [Image.fromarray(np.full((24, 40), v, np.uint8)) for v in (10, 20, 30)]
    path = tmp_path / "stack.tif"
    pages[0].save(path, save_all=True, append_images=pages[1:])
    frames = list(iter_frames(path))
    assert [f.index for f in frames] == [0, 1, 2]
    assert [int(f.image.mean()) for f in frames] == [10, 20, 30]


def test_png_with_wrong_extension_is_read_by_content(tmp_path):
    path = tmp_path / "actually_png.jpg"
    Image.fromarray(RGB).save(path, format="PNG")
    assert np.array_equal(only_frame(path).image, RGB)


def test_huge_image_refused_before_decoding(tmp_path):
    path = tmp_path / "big.png"
    Image.fromarray(RGB).save(path)
    with pytest.raises(ReadError, match=r"big\.png.*exceeds max_pixels=100"):
        list(iter_frames(path, ReaderConfig(max_pixels=100)))


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".tif"])
def test_truncated_image_raises_naming_file(tmp_path, ext):
    ok, buf = cv2.imencode(ext, RNG.integers(0, 256, (64, 80, 3), dtype=np.uint8))
    path = tmp_path / f"cut{ext}"
    path.write_bytes(buf.tobytes()[: len(buf) * 2 // 3])
    with pytest.raises(ReadError, match=rf"cut\{ext}: "):
        list(iter_frames(path))


def test_empty_image_raises(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    assert detect_kind(path) == "image"  # by extension, so the read reports why it fails
    with pytest.raises(ReadError, match=r"empty\.png: empty file"):
        list(iter_frames(path))


def test_text_file_named_png_raises(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n" * 20)
    with pytest.raises(ReadError, match=r"notes\.png: not a decodable image"):
        list(iter_frames(path))


def test_corrupt_png_body_raises(tmp_path):
    path = tmp_path / "bad.png"
    ok, buf = cv2.imencode(".png", RGB)
    data = bytearray(buf.tobytes())
    data[60:200] = bytes(140)  # wipe compressed data inside IDAT
    path.write_bytes(bytes(data))
    with pytest.raises(ReadError, match=r"bad\.png"):
        list(iter_frames(path))


def test_unsupported_file_raises_and_is_not_detected(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("a,b\n1,2\n")
    assert detect_kind(path) is None
    with pytest.raises(ReadError, match=r"labels\.csv: not a supported input"):
        list(iter_frames(path))


def test_missing_file_raises(tmp_path):
    with pytest.raises(ReadError, match=r"nope\.png: file not found"):
        list(iter_frames(tmp_path / "nope.png"))
