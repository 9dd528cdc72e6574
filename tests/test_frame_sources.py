"""Tests for sparc.data.frames: uniform sampling, frame folders, video files (PyAV), FrameSource."""

import sys
import warnings

import pytest
import torch

from sparc.data.frames import (
    AV_INSTALL_HINT,
    FrameSource,
    list_frame_files,
    natural_key,
    read_frame_folder,
    read_video,
    uniform_indices,
)


# ---- uniform_indices (hand-checked) ---------------------------------------------------------------


def test_uniform_centres_by_hand():
    # 10 frames in 4 segments of 2.5: centres 1.25, 3.75, 6.25, 8.75
    assert uniform_indices(10, 4) == [1, 3, 6, 8]
    # 8 frames, 4 segments of 2: centres 1, 3, 5, 7
    assert uniform_indices(8, 4) == [1, 3, 5, 7]
    assert uniform_indices(5, 1) == [2]
    assert uniform_indices(7, 7) == list(range(7))
    # 100 frames, 8 wanted: segments of 12.5, centres 6.25, 18.75, ...
    assert uniform_indices(100, 8) == [6, 18, 31, 43, 56, 68, 81, 93]


def test_uniform_fewer_available_repeats_in_order():
    assert uniform_indices(2, 4) == [0, 0, 1, 1]
    assert uniform_indices(1, 3) == [0, 0, 0]
    assert uniform_indices(3, 4) == [0, 1, 1, 2]  # centres 0.375, 1.125, 1.875, 2.625
    out = uniform_indices(5, 16)
    assert len(out) == 16 and out == sorted(out) and set(out) == set(range(5))


def test_uniform_clips_first_frame_of_each_clip():
    # VGT: 8 clips x 4 frames from 64 frames; the 32 centres are 1, 3, 5, ...; the clip starts 1, 9, 17, ...
    assert uniform_indices(64, 32, clips=8) == [1, 9, 17, 25, 33, 41, 49, 57]
    assert uniform_indices(64, 32, clips=8, frames_per_clip=4) == [1, 9, 17, 25, 33, 41, 49, 57]
    assert uniform_indices(64, 32, frames_per_clip=4) == [1, 9, 17, 25, 33, 41, 49, 57]
    # 10 frames, 2 clips x 2: centres [1, 3, 6, 8] -> first of each clip [1, 6]
    assert uniform_indices(10, 4, clips=2) == [1, 6]
    # fewer frames than the backbone wants: still one index per clip
    assert uniform_indices(3, 8, clips=4) == [0, 0, 1, 2]


def test_uniform_rejects_bad_arguments():
    with pytest.raises(ValueError, match="no frames"):
        uniform_indices(0, 4)
    with pytest.raises(ValueError, match="num_frames"):
        uniform_indices(10, 0)
    with pytest.raises(ValueError, match="clips"):
        uniform_indices(64, 32, clips=5)
    with pytest.raises(ValueError, match="must equal"):
        uniform_indices(64, 32, clips=8, frames_per_clip=3)


# ---- frame folders --------------------------------------------------------------------------------


def _write_png(path, value, size=(6, 8)):
    from torchvision.io import write_png

    img = torch.full((3, *size), 0, dtype=torch.uint8)
    img[0] = value          # red channel carries the frame number
    img[1] = 255 - value
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        write_png(img, str(path))


@pytest.fixture
def frame_folder(tmp_path):
    folder = tmp_path / "vid1"
    folder.mkdir()
    for i in range(12):  # frame_0 .. frame_11: lexicographic order would put frame_10 after frame_1
        _write_png(folder / f"frame_{i}.png", value=10 * i)
    (folder / "notes.txt").write_text("not a frame")
    return folder


def test_natural_sort():
    names = ["frame_10.png", "frame_9.png", "frame_1.png", "Frame_2.png", "frame_100.png"]
    assert sorted(names, key=natural_key) == ["frame_1.png", "Frame_2.png", "frame_9.png", "frame_10.png", "frame_100.png"]


def test_list_frame_files_natural_and_filtered(frame_folder):
    files = list_frame_files(frame_folder)
    assert [f.name for f in files] == [f"frame_{i}.png" for i in range(12)]


def test_read_frame_folder_samples_uniformly(frame_folder):
    frames = read_frame_folder(frame_folder, 4)
    assert frames.dtype == torch.uint8 and frames.shape == (4, 6, 8, 3)
    # 12 frames, 4 segments of 3: centres 1.5, 4.5, 7.5, 10.5 -> frames 1, 4, 7, 10
    assert frames[:, 0, 0, 0].tolist() == [10, 40, 70, 100]
    assert frames[:, 0, 0, 1].tolist() == [245, 215, 185, 155]
    assert (frames[..., 2] == 0).all()


def test_read_frame_folder_clips_and_repeats(frame_folder):
    # 12 frames, 8 = 4 clips x 2: centres 0, 2, 3, 5, 6, 8, 9, 11 -> clip starts 0, 3, 6, 9
    assert read_frame_folder(frame_folder, 8, clips=4)[:, 0, 0, 0].tolist() == [0, 30, 60, 90]
    many = read_frame_folder(frame_folder, 24)
    assert many.shape[0] == 24 and many[:, 0, 0, 0].tolist() == [10 * (i // 2) for i in range(24)]


def test_read_frame_folder_jpg_and_grey(tmp_path):
    from torchvision.io import write_jpeg

    folder = tmp_path / "jpgs"
    folder.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for i in range(3):
            write_jpeg(torch.full((1, 16, 16), 50 * (i + 1), dtype=torch.uint8), str(folder / f"{i}.JPG"))
    frames = read_frame_folder(folder, 3)
    assert frames.shape == (3, 16, 16, 3)  # grey decoded as RGB
    assert (frames[:, 8, 8, :].float() - torch.tensor([[50.0], [100.0], [150.0]])).abs().max() <= 3


def test_read_frame_folder_errors_name_the_folder(tmp_path):
    empty = tmp_path / "empty_vid"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="empty_vid.*no frame images"):
        read_frame_folder(empty, 4)
    with pytest.raises(FileNotFoundError, match="missing_vid"):
        read_frame_folder(tmp_path / "missing_vid", 4)
    broken = tmp_path / "broken_vid"
    broken.mkdir()
    _write_png(broken / "f_0.png", 0)
    (broken / "f_1.png").write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match=r"broken_vid.*f_1\.png"):
        read_frame_folder(broken, 2)
    mixed = tmp_path / "mixed_vid"
    mixed.mkdir()
    _write_png(mixed / "a1.png", 0, size=(4, 4))
    _write_png(mixed / "a2.png", 0, size=(5, 4))
    with pytest.raises(ValueError, match="mixed_vid.*differ in size"):
        read_frame_folder(mixed, 2)


# ---- video files ----------------------------------------------------------------------------------

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)]


def _write_mp4(path, num_frames=20, size=32):
    """``num_frames`` solid frames; frame i has colour COLOURS[i // 5]."""
    av = pytest.importorskip("av")
    import numpy as np

    codec = "mpeg4" if "mpeg4" in av.codecs_available else "libx264"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=10)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(num_frames):
            img = np.zeros((size, size, 3), dtype=np.uint8)
            img[:] = COLOURS[(i // 5) % len(COLOURS)]
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _close(frame_rgb, colour, tol=40):
    return (frame_rgb.float().mean(dim=(0, 1)) - torch.tensor(colour, dtype=torch.float32)).abs().max() <= tol


def test_read_video_count_and_colours(tmp_path):
    pytest.importorskip("av")
    path = tmp_path / "clip.mp4"
    _write_mp4(path)
    frames = read_video(path, 4)
    assert frames.dtype == torch.uint8 and frames.shape == (4, 32, 32, 3)
    # 20 frames, 4 segments of 5: centres 2, 7, 12, 17 -> one frame of each colour
    for f, colour in zip(frames, COLOURS):
        assert _close(f, colour), (f.float().mean(dim=(0, 1)), colour)
    # more frames than the video holds: repeats, right count
    many = read_video(path, 40)
    assert many.shape == (40, 32, 32, 3)
    assert _close(many[0], COLOURS[0]) and _close(many[-1], COLOURS[-1])
    # clips: 20 frames, 8 = 4 x 2 -> centres 1, 3, 6, 8, 11, 13, 16, 18 -> starts 1, 6, 11, 16
    clipped = read_video(path, 8, clips=4)
    assert clipped.shape[0] == 4
    for f, colour in zip(clipped, COLOURS):
        assert _close(f, colour)


def test_read_video_recovers_when_metadata_overcounts(tmp_path, monkeypatch):
    pytest.importorskip("av")
    import sparc.data.frames as frames_mod

    path = tmp_path / "clip.mp4"
    _write_mp4(path)
    monkeypatch.setattr(frames_mod, "_count_frames", lambda container, stream: 40)  # claims 40, holds 20
    frames = read_video(path, 4)  # indices 5, 15, 25, 35 first; re-sampled for the true 20 frames
    assert frames.shape == (4, 32, 32, 3)
    for f, colour in zip(frames, COLOURS):
        assert _close(f, colour)


def test_read_video_errors_name_the_file(tmp_path):
    pytest.importorskip("av")
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        read_video(tmp_path / "nope.mp4", 4)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00not a video at all" * 10)
    with pytest.raises(ValueError, match="junk.mp4"):
        read_video(junk, 4)


def test_read_video_without_av_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # makes `import av` raise ImportError
    (tmp_path / "v.mp4").write_bytes(b"")
    with pytest.raises(ImportError) as info:
        read_video(tmp_path / "v.mp4", 4)
    assert AV_INSTALL_HINT in str(info.value)
    assert "pip install 'sparc-videoqa[video]'" in str(info.value)


# ---- FrameSource ----------------------------------------------------------------------------------


def test_frame_source_folder_layout(tmp_path, frame_folder):
    source = FrameSource(tmp_path, 4)
    assert source.locate("vid1") == frame_folder
    assert source.frames_for("vid1")[:, 0, 0, 0].tolist() == [10, 40, 70, 100]
    assert source("vid1").shape == (4, 6, 8, 3)
    with pytest.raises(FileNotFoundError, match=r"'vid2'.*vid2\.mp4"):
        source.frames_for("vid2")


def test_frame_source_file_layout_and_folder_preferred(tmp_path, frame_folder):
    pytest.importorskip("av")
    _write_mp4(tmp_path / "vid2.mp4")
    source = FrameSource(tmp_path, 8, clips=4)
    assert source.locate("vid2") == tmp_path / "vid2.mp4"
    frames = source.frames_for("vid2")
    assert frames.shape == (4, 32, 32, 3)
    assert all(_close(f, c) for f, c in zip(frames, COLOURS))
    # both present: the folder wins
    _write_mp4(tmp_path / "vid1.mp4")
    assert source.frames_for("vid1").shape == (4, 6, 8, 3)


def test_frame_source_validates_up_front(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_root"):
        FrameSource(tmp_path / "no_root", 4)
    with pytest.raises(ValueError):
        FrameSource(tmp_path, 32, clips=5)
