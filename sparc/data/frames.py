"""Frame sources for the teacher-prior extraction: which frames SpARC samples, and where they come from.

The teachers (``sparc.teachers.albef.ALBEFTeacher.preprocess``, ``sparc.teachers.hf_vqa``) take raw
uint8 frames ``[F, H, W, 3]`` and resize/normalise them themselves, so every reader here returns
exactly that: uint8, channels last, RGB, at the frames' native resolution.

* :func:`uniform_indices` - the frame indices SpARC samples (N evenly spaced, or the first frame of
  each clip for clip-based backbones such as VGT, SpARC A.3).
* :func:`read_frame_folder` - a folder of extracted frame images (jpg/png), decoded with
  ``torchvision.io``.
* :func:`read_video` - a video file decoded with PyAV (optional extra ``video``).
* :class:`FrameSource` - picks folder or file per video id under one root.
* :class:`FrameIdSource` - frames chosen per question by number (STAGE's 0.5-fps frames, whose phase
  depends on the question), from ``{qid: [frame numbers]}`` (:func:`read_frame_ids`) grouped by
  :func:`frame_id_groups`.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch

PathLike = Union[str, os.PathLike]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov")
AV_INSTALL_HINT = "pip install 'sparc-videoqa[video]'"


# ---- which frames ---------------------------------------------------------------------------------


def uniform_indices(num_available: int, num_frames: int, clips: Optional[int] = None,
                    frames_per_clip: Optional[int] = None) -> List[int]:
    """The frame indices SpARC samples from a video of ``num_available`` frames.

    Convention (segment centres, as the NExT-QA / VGT samplers): the video is cut into
    ``num_frames`` equal segments and the frame at the centre of each is taken,
    ``index_i = floor((i + 0.5) * num_available / num_frames)`` for ``i = 0 .. num_frames - 1``.
    E.g. 10 available, 4 wanted -> ``[1, 3, 6, 8]``.

    Fewer frames available than wanted: the same formula repeats frames, each available frame
    appearing about equally often and in order (2 available, 4 wanted -> ``[0, 0, 1, 1]``), so the
    result always has the length the backbone expects.

    Clips (``clips`` and/or ``frames_per_clip`` given): ``num_frames`` is the backbone's total frame
    count (VGT: 32 = 8 clips x 4 frames). The backbone's own ``num_frames`` segment-centre samples
    are grouped into ``clips`` consecutive clips of ``frames_per_clip`` frames, and the first sampled
    frame of each clip is returned (``clips`` indices) - the frame the teacher scores for that clip
    (SpARC A.3). Either of ``clips`` / ``frames_per_clip`` may be left out and is then derived from
    ``num_frames``; ``clips * frames_per_clip`` must equal ``num_frames``.
    """
    num_available, num_frames = int(num_available), int(num_frames)
    if num_available < 1:
        raise ValueError(f"num_available must be >= 1 (the video has no frames), got {num_available}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    centres = [((2 * i + 1) * num_available) // (2 * num_frames) for i in range(num_frames)]
    if clips is None and frames_per_clip is None:
        return centres
    if clips is None:
        frames_per_clip = int(frames_per_clip)
        if frames_per_clip < 1 or num_frames % frames_per_clip:
            raise ValueError(f"num_frames={num_frames} is not a whole number of clips of frames_per_clip={frames_per_clip}")
        clips = num_frames // frames_per_clip
    elif frames_per_clip is None:
        clips = int(clips)
        if clips < 1 or num_frames % clips:
            raise ValueError(f"num_frames={num_frames} does not split into clips={clips} equal clips")
        frames_per_clip = num_frames // clips
    clips, frames_per_clip = int(clips), int(frames_per_clip)
    if clips < 1 or frames_per_clip < 1 or clips * frames_per_clip != num_frames:
        raise ValueError(f"clips ({clips}) x frames_per_clip ({frames_per_clip}) must equal num_frames ({num_frames})")
    return centres[::frames_per_clip]


# ---- frame folders --------------------------------------------------------------------------------


def natural_key(name: str):
    """Sort key that orders embedded numbers by value: ``frame_9`` before ``frame_10``."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part.lower())
            for part in re.split(r"(\d+)", name) if part != ""]


def list_frame_files(folder: PathLike, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> List[Path]:
    """The image files directly in ``folder`` (case-insensitive extension match), naturally sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"frame folder {str(folder)!r} does not exist or is not a directory")
    exts = tuple(e.lower() for e in extensions)
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in exts]
    return sorted(files, key=lambda p: natural_key(p.name))


def _decode_image(path: Path) -> torch.Tensor:
    """One image file -> uint8 ``[H, W, 3]`` RGB (grey/alpha images converted)."""
    from torchvision import io

    try:
        with warnings.catch_warnings():  # torchvision >= 0.29 deprecates io's image codecs
            warnings.simplefilter("ignore", DeprecationWarning)
            data = io.read_file(str(path))
            img = io.decode_image(data, mode=io.ImageReadMode.RGB)
    except Exception as e:  # torchvision raises RuntimeError/ValueError for corrupt or unknown data
        raise ValueError(f"could not decode frame image {str(path)!r}: {e}") from e
    if img.dtype != torch.uint8:  # 16-bit png
        img = (img.to(torch.float32) / 257.0).round().clamp(0, 255).to(torch.uint8)
    return img.permute(1, 2, 0).contiguous()


def read_frame_folder(folder: PathLike, num_frames: int, clips: Optional[int] = None,
                      frames_per_clip: Optional[int] = None,
                      extensions: Sequence[str] = IMAGE_EXTENSIONS) -> torch.Tensor:
    """Sample frames from a folder of frame images -> uint8 ``[N, H, W, 3]``.

    The folder's jpg/png files (``extensions``) are sorted naturally (``frame_10`` after ``frame_9``)
    and taken as the video's frames in order; :func:`uniform_indices` picks which to decode
    (only the sampled files are read). All sampled frames must share one size.
    """
    folder = Path(folder)
    files = list_frame_files(folder, extensions)
    if not files:
        raise ValueError(f"frame folder {str(folder)!r} holds no frame images (looked for {', '.join(extensions)})")
    indices = uniform_indices(len(files), num_frames, clips, frames_per_clip)
    decoded = {}
    frames = []
    for i in indices:
        if i not in decoded:
            decoded[i] = _decode_image(files[i])
        frames.append(decoded[i])
    shapes = {tuple(f.shape) for f in frames}
    if len(shapes) > 1:
        raise ValueError(f"frame images in {str(folder)!r} differ in size: {sorted(shapes)}")
    return torch.stack(frames)


# ---- video files ----------------------------------------------------------------------------------


def _import_av():
    try:
        import av  # noqa: F401
    except ImportError as e:
        raise ImportError(f"reading video files needs PyAV: {AV_INSTALL_HINT} (or pip install av)") from e
    return av


def _count_frames(container, stream) -> int:
    """Frame count from the container metadata, else by demuxing packets (no decoding)."""
    if stream.frames and stream.frames > 0:
        return int(stream.frames)
    count = sum(1 for packet in container.demux(stream) if packet.size > 0)
    container.seek(0, stream=stream)
    return count


def _decode_selected(container, stream, indices: Sequence[int]) -> tuple:
    """Decode the stream once, front to back, keeping only frames at ``indices`` (stops after the last).

    Returns ``(frames_by_index, frames_decoded)``; memory holds only the distinct sampled frames.
    """
    wanted = set(indices)
    last = max(wanted)
    kept = {}
    position = -1
    for position, frame in enumerate(container.decode(stream)):
        if position in wanted:
            kept[position] = torch.from_numpy(frame.to_ndarray(format="rgb24"))
        if position >= last:
            break
    return kept, position + 1


def read_video(path: PathLike, num_frames: int, clips: Optional[int] = None,
               frames_per_clip: Optional[int] = None) -> torch.Tensor:
    """Sample frames from a video file with PyAV -> uint8 ``[N, H, W, 3]`` RGB.

    The frame count comes from the container (or from counting packets when the container does not
    say); :func:`uniform_indices` picks the frames; the first video stream is then decoded once from
    the start, keeping only the sampled frames and stopping after the last one, so memory holds at
    most ``N`` frames. Sequential decoding (rather than keyframe seeks) keeps the indices exact for
    every codec. If the stream turns out to hold fewer frames than the container claimed, the
    indices are recomputed for the true count and the stream is decoded a second time.
    """
    av = _import_av()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video file {str(path)!r} does not exist")
    try:
        container = av.open(str(path))
    except Exception as e:
        raise ValueError(f"could not open video file {str(path)!r}: {e}") from e
    try:
        if not container.streams.video:
            raise ValueError(f"video file {str(path)!r} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            available = _count_frames(container, stream)
            if available < 1:
                raise ValueError(f"video file {str(path)!r} has no frames")
            indices = uniform_indices(available, num_frames, clips, frames_per_clip)
            kept, decoded = _decode_selected(container, stream, indices)
            if len(kept) < len(set(indices)):  # fewer frames than the metadata claimed
                if decoded < 1:
                    raise ValueError(f"video file {str(path)!r} decoded no frames")
                indices = uniform_indices(decoded, num_frames, clips, frames_per_clip)
                container.seek(0, stream=stream)
                kept, _ = _decode_selected(container, stream, indices)
                if len(kept) < len(set(indices)):
                    raise ValueError(f"video file {str(path)!r}: could not decode frames {sorted(set(indices) - set(kept))}")
        except av.error.FFmpegError as e:  # corrupt data, unsupported codec
            raise ValueError(f"could not decode video file {str(path)!r}: {e}") from e
    finally:
        container.close()
    return torch.stack([kept[i] for i in indices])


# ---- one root, either layout ----------------------------------------------------------------------


class MissingFramesError(FileNotFoundError, ValueError):
    """No frame folder or video file for a video id. A ``FileNotFoundError`` (what it is) that is also a
    ``ValueError``, as every other bad-input error of the frame readers, so callers catching either work."""


class FrameSource:
    """Frames per video id from a root holding frame folders, video files, or a mix.

    ``frames_for(video_id)`` reads ``<root>/<video_id>/`` (a folder of frame images) when that
    folder exists, else ``<root>/<video_id><ext>`` for the first ``ext`` in ``video_extensions``
    (``.mp4`` first) that exists, sampling ``num_frames`` (or one frame per clip) with
    :func:`uniform_indices`. Returns uint8 ``[N, H, W, 3]``, ready for a teacher.
    """

    def __init__(self, root: PathLike, num_frames: int, clips: Optional[int] = None,
                 frames_per_clip: Optional[int] = None,
                 video_extensions: Sequence[str] = VIDEO_EXTENSIONS,
                 image_extensions: Sequence[str] = IMAGE_EXTENSIONS):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"frame source root {str(self.root)!r} does not exist or is not a directory")
        # validate the sampling arguments once, up front
        uniform_indices(max(int(num_frames), 1), num_frames, clips, frames_per_clip)
        self.num_frames = int(num_frames)
        self.clips = clips
        self.frames_per_clip = frames_per_clip
        self.video_extensions = tuple(video_extensions)
        self.image_extensions = tuple(image_extensions)

    def locate(self, video_id: str) -> Path:
        """The folder or file that holds ``video_id``'s frames (:class:`MissingFramesError` naming what was
        tried)."""
        folder = self.root / str(video_id)
        if folder.is_dir():
            return folder
        tried = [str(folder) + os.sep]
        for ext in self.video_extensions:
            candidate = self.root / f"{video_id}{ext}"
            if candidate.is_file():
                return candidate
            tried.append(str(candidate))
        raise MissingFramesError(f"no frames for video {video_id!r} under {str(self.root)!r}; tried {', '.join(tried)}")

    def frames_for(self, video_id: str) -> torch.Tensor:
        """uint8 ``[N, H, W, 3]`` sampled frames of ``video_id``."""
        where = self.locate(video_id)
        if where.is_dir():
            return read_frame_folder(where, self.num_frames, self.clips, self.frames_per_clip,
                                     extensions=self.image_extensions)
        return read_video(where, self.num_frames, self.clips, self.frames_per_clip)

    def __call__(self, video_id: str) -> torch.Tensor:
        return self.frames_for(video_id)


# ---- named frames per question (STAGE) --------------------------------------------------------------


def numbered_frame(folder: PathLike, number: int, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> Path:
    """The image of 1-indexed frame ``number`` in ``folder``: ``00042.jpg`` (TVQA's frames, 3 fps) or
    ``42.jpg``, any of ``extensions`` (:class:`MissingFramesError` naming what was tried)."""
    folder = Path(folder)
    tried = []
    for stem in (f"{int(number):05d}", str(int(number))):
        for ext in extensions:
            path = folder / f"{stem}{ext}"
            if path.is_file():
                return path
            tried.append(str(path))
    raise MissingFramesError(f"no image for frame {int(number)} in {str(folder)!r}; tried {', '.join(tried[:2])}, ...")


class FrameIdSource:
    """Frames chosen per question, not sampled per video: each *group* (a video and one list of its
    1-indexed frame numbers, shared by the questions that read those frames) is read from the video's
    frame folder, ``<root>/<video>/`` or ``<root>/<any folder>/<video>/`` (TVQA's
    ``frames_hq/{show}_frames/<vid_name>/``), one image per number (:func:`numbered_frame`).

    ``groups``: ``{group id: (video id, [frame numbers])}`` (:func:`frame_id_groups` builds it). Groups
    have different lengths (``variable_frames``): the prior store pads them to the longest,
    ``num_frames``, and records each group's ``frame_count``."""

    variable_frames = True
    clips = None

    def __init__(self, root: PathLike, groups: Dict[str, Tuple[str, Sequence[int]]],
                 image_extensions: Sequence[str] = IMAGE_EXTENSIONS):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"frame source root {str(self.root)!r} does not exist or is not a directory")
        if not groups:
            raise ValueError("no frame groups (field: frame_ids)")
        self.groups = {str(k): (str(v), [int(f) for f in ids]) for k, (v, ids) in groups.items()}
        self.num_frames = max(len(ids) for _, ids in self.groups.values())
        self.image_extensions = tuple(image_extensions)
        self._subfolders = sorted(p for p in self.root.iterdir() if p.is_dir())

    def frame_count(self, group: str) -> int:
        return len(self.groups[group][1])

    def locate(self, group: str) -> Path:
        video = self.groups[group][0]
        tried = [self.root / video] + [sub / video for sub in self._subfolders]
        for folder in tried:
            if folder.is_dir():
                return folder
        raise MissingFramesError(f"no frame folder for video {video!r} under {str(self.root)!r}; tried "
                                 f"{str(tried[0])}{os.sep} and <folder>/{video}{os.sep} in its {len(tried) - 1} folders")

    def frames_for(self, group: str) -> torch.Tensor:
        """uint8 ``[N, H, W, 3]``: the group's frames in its order."""
        folder = self.locate(group)
        frames = [_decode_image(numbered_frame(folder, n, self.image_extensions)) for n in self.groups[group][1]]
        shapes = {tuple(f.shape) for f in frames}
        if len(shapes) > 1:
            raise ValueError(f"frame images in {str(folder)!r} differ in size: {sorted(shapes)}")
        return torch.stack(frames)

    def __call__(self, group: str) -> torch.Tensor:
        return self.frames_for(group)


def read_frame_ids(path: PathLike) -> Dict[str, List[int]]:
    """A ``{qid: [1-indexed frame numbers]}`` JSON file (a recipe writes it: ``recipes/tvqaplus.py
    --write-frame-ids``); every list non-empty, every number a positive integer."""
    import json

    with open(path) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not JSON ({e}) (field: frame_ids)") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a {{qid: [frame numbers]}} object (field: frame_ids)")
    out = {}
    for qid, ids in data.items():
        if (not isinstance(ids, list) or not ids
                or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in ids)):
            raise ValueError(f"{path}: qid {qid!r}: frame ids must be a non-empty list of 1-indexed frame numbers, "
                             f"got {str(ids)[:80]} (field: frame_ids)")
        out[str(qid)] = ids
    return out


def frame_id_groups(questions, frame_ids: Dict[str, Sequence[int]], source: str = "frame ids"):
    """``(questions with their video set to their group, {group: (video, frame numbers)})``: the
    questions of one video that read the same frames share a group ``"<video>@<n>"`` (n counts the
    video's distinct frame lists in order of first appearance), so each group's frames are decoded once
    and scored for all its questions. A question without frame ids is an error naming it."""
    import dataclasses

    groups: Dict[str, Tuple[str, List[int]]] = {}
    by_frames: Dict[Tuple[str, Tuple[int, ...]], str] = {}
    per_video: Dict[str, int] = {}
    regrouped = []
    for q in questions:
        if q.qid not in frame_ids:
            raise ValueError(f"{source}: no frame ids for qid {q.qid!r} (video {q.video!r}) (field: frame_ids)")
        key = (q.video, tuple(int(f) for f in frame_ids[q.qid]))
        if key not in by_frames:
            n = per_video.get(q.video, 0)
            per_video[q.video] = n + 1
            by_frames[key] = f"{q.video}@{n}"
            groups[by_frames[key]] = (q.video, list(key[1]))
        regrouped.append(dataclasses.replace(q, video=by_frames[key]))
    return regrouped, groups
