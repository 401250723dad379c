"""Video reader: MJPG AVIs written with OpenCV, sampled at 3 frames per second."""

import logging

import cv2
import numpy as np
import pytest

from usfmae.io import ReaderConfig, ReadError, detect_kind, iter_frames
from usfmae.io.kinds import kind_from_content
from usfmae.io.sampling import indices_for_count, sampled_indices

from helpers import real_us_file
from hostile_corpus import VIDEO_CONTAINERS

H, W = 48, 64


def write_avi(path, n_frames, fps=30.0):
    """Frame i is uniformly gray at level 4*i, so a frame's index can be read back from its pixels."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (W, H))
    assert writer.isOpened()
    for i in range(n_frames):
        writer.write(np.full((H, W, 3), 4 * i, np.uint8))
    writer.release()
    return path


def level(frame):
    return int(round(frame.image.mean() / 4))


@pytest.mark.parametrize("n_frames, expected", [(30, [0, 10, 20]), (31, [0, 10, 20, 30]), (45, [0, 10, 20, 30, 40])])
def test_30fps_sampled_at_3fps_keeps_every_10th_frame(tmp_path, n_frames, expected):
    path = write_avi(tmp_path / "clip.avi", n_frames)
    frames = list(iter_frames(path))
    assert [f.index for f in frames] == expected
    assert [level(f) for f in frames] == expected  # the pixels are those frames, not others
    assert all(f.kind == "video" and f.image.shape == (H, W, 3) and f.original_size == (H, W) for f in frames)


def test_frame_rate_follows_the_container(tmp_path):
    path = write_avi(tmp_path / "slow.avi", 12, fps=6.0)
    assert [f.index for f in iter_frames(path)] == [0, 2, 4, 6, 8, 10]


def test_target_rate_above_source_keeps_all_frames(tmp_path):
    path = write_avi(tmp_path / "few.avi", 5, fps=2.0)
    assert [f.index for f in iter_frames(path)] == [0, 1, 2, 3, 4]


def test_configurable_rate(tmp_path):
    path = write_avi(tmp_path / "clip.avi", 30)
    assert [f.index for f in iter_frames(path, ReaderConfig(video_fps=5.0))] == [0, 6, 12, 18, 24]


def test_reading_is_lazy(tmp_path):
    path = write_avi(tmp_path / "clip.avi", 60)
    frames = iter_frames(path)
    assert next(frames).index == 0
    assert next(frames).index == 10
    frames.close()  # releases the capture without decoding the rest


def test_mp4_detected_by_content(tmp_path):
    path = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (W, H))
    for i in range(20):
        writer.write(np.full((H, W, 3), 4 * i, np.uint8))
    writer.release()
    renamed = path.rename(tmp_path / "clip_no_ext")
    assert detect_kind(renamed) == "video"
    assert [f.index for f in iter_frames(renamed)] == [0, 10]


def test_sampling_helpers():
    assert indices_for_count(30, 30.0, 3.0) == [0, 10, 20]
    assert indices_for_count(30, 1000 / 33.333, 3.0) == [0, 10, 20]  # DICOM FrameTime 33.333 ms
    assert indices_for_count(30, 1000 / 33.334, 3.0) == [0, 10, 20]  # 29.9994 fps: no index 30
    assert indices_for_count(10, 29.97, 3.0) == [0]
    it = sampled_indices(25.0, 3.0)
    assert [next(it) for _ in range(4)] == [0, 8, 17, 25]  # nearest frames to 0, 1/3, 2/3, 1 s


def test_missing_fps_falls_back_with_warning(tmp_path, caplog):
    from usfmae.io.sampling import usable_fps

    with caplog.at_level(logging.WARNING):
        assert usable_fps(0.0, 30.0, "x.avi", "video container") == 30.0
        assert usable_fps(float("nan"), 25.0, "x.avi", "video container") == 25.0
        assert usable_fps(90000.0, 30.0, "x.avi", "video container") == 30.0
    assert caplog.text.count("x.avi: video container states no usable frame rate") == 3
    assert usable_fps(29.97, 30.0, "x.avi", "video container") == 29.97


def test_truncated_video_raises_naming_file(tmp_path):
    path = write_avi(tmp_path / "cut.avi", 30)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ReadError, match=r"cut\.avi: truncated video: decoded \d+ of 30"):
        list(iter_frames(path))


def test_garbage_avi_raises(tmp_path):
    path = tmp_path / "junk.avi"
    path.write_bytes(b"definitely not a video" * 50)
    with pytest.raises(ReadError, match=r"junk\.avi: not a decodable video"):
        list(iter_frames(path))


def test_empty_avi_raises(tmp_path):
    path = tmp_path / "empty.avi"
    path.write_bytes(b"")
    with pytest.raises(ReadError, match=r"empty\.avi: empty file"):
        list(iter_frames(path))


@pytest.mark.parametrize("ext, fourcc", VIDEO_CONTAINERS, ids=[e for e, _ in VIDEO_CONTAINERS])
def test_every_container_opencv_writes_is_read_by_content(tmp_path, ext, fourcc):
    """Issue 13: MPEG program/transport streams, Matroska/WebM, ASF/WMV, FLV, MXF, QuickTime... are videos
    by their first bytes, with or without their extension."""
    path = tmp_path / f"clip{ext}"
    writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*fourcc), 30.0, (W, H))
    if not writer.isOpened():
        pytest.skip(f"this OpenCV build cannot write {ext} with {fourcc}")
    for i in range(30):
        writer.write(np.full((H, W, 3), 4 * i, np.uint8))
    writer.release()
    bare = path.rename(tmp_path / "clip_without_extension")
    assert detect_kind(bare) == "video"
    frames = list(iter_frames(bare))
    assert [f.index for f in frames] == [0, 10, 20]
    assert all(abs(level(f) - f.index) <= 1 for f in frames)  # lossy codecs: the right frames, near their level


@pytest.mark.parametrize("head", [b"\x00\x00\x01\xba", b"\x1a\x45\xdf\xa3", bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c"),
                                  b"OggS\x00", b"FLV\x01", b"RIFF\x00\x00\x00\x00AVI ", b"\x00\x00\x00\x18ftypmp42"])
def test_container_signatures(head):
    assert kind_from_content(head + bytes(600)) == "video"


def test_mpeg_transport_stream_needs_three_sync_bytes():
    packets = bytearray(600)
    packets[0] = packets[188] = packets[376] = 0x47
    assert kind_from_content(bytes(packets)) == "video"
    packets[376] = 0
    assert kind_from_content(bytes(packets)) is None


def test_text_named_like_a_video_never_reaches_ffmpeg(tmp_path):
    """FFmpeg follows playlists and concat scripts: a text file with a video name is refused by content."""
    path = tmp_path / "playlist.avi"
    path.write_text("#EXTM3U\n#EXTINF:1,\n/etc/passwd\n#EXT-X-ENDLIST\n")
    with pytest.raises(ReadError, match=r"playlist\.avi: not a decodable video \(its content is not a known video"):
        list(iter_frames(path))


def test_real_mpeg2_program_stream():
    """The MPEG-2 program stream of issue 13 (280 frames at 25 fps, 370x370): 3 fps keeps every 8-9th frame."""
    path = real_us_file("covidus__Reg_pat1Image_132943.mpeg")
    frames = list(iter_frames(path))
    assert len(frames) == 34 and frames[0].image.shape == (370, 370, 3)
    assert [f.index for f in frames[:4]] == [0, 8, 17, 25]
