"""Run an image-QA teacher over every (frame, question) of a dataset and write the probabilities to a
:class:`~sparc.priors.store.PriorStore` (``sparc extract-priors``: :mod:`sparc.cli.priors`).

How the work is cut (DESIGN "Performance rules"):

* questions are grouped by video; each video's frames are decoded once, in DataLoader workers, while
  the teacher works on the previous video;
* the teacher encodes each frame once (``encode_images``; ALBEF also caches the fusion layers' image
  keys/values) and scores all questions of the video and all their candidates in batched passes;
* on CUDA the teacher runs under bf16 autocast (probabilities are computed in float32);
* under ``accelerate launch`` each process takes every ``num_processes``-th video and writes its own
  part store; the main process then moves the parts' shards into the final store.

Resuming: a shard holds the questions of exactly ``videos_per_shard`` consecutive videos (of this
process's list), written atomically; an interrupted job drops the shard it was filling, and a rerun
skips every video whose questions are all stored. Shard boundaries therefore never depend on where a
run was stopped, and a resumed single-process extraction is byte-identical to an uninterrupted one.
(The store is this job's checkpoint; its files are written with :func:`sparc.resumable.atomic_path`,
and its progress bar starts at the videos already stored.)
"""

from __future__ import annotations

import inspect
import os
import time
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch

from sparc.priors.store import PriorStore, move_shards
from sparc.resumable import progress_bar

__all__ = ["extract_priors", "extract_dataset_priors", "ExtractionStats"]


@torch.no_grad()
def extract_priors(teacher, videos: Iterable[Tuple[object, list, object, object]], path, *, num_frames: int,
                   num_candidates: int, metadata=None, progress: bool = False) -> PriorStore:
    """In-memory inputs: ``videos`` yields ``(frames, qids, questions, candidates)`` per video, in the
    teacher's formats; ``teacher.score`` must return ``[Q, F, C]`` (or ``[F, C]`` for a single
    question). Resumable: questions already in the store are skipped."""
    from tqdm.auto import tqdm

    with PriorStore.create(path, num_candidates=num_candidates, num_frames=num_frames, resume=True,
                           metadata=metadata) as writer:
        for frames, qids, questions, candidates in tqdm(videos, desc="priors", disable=not progress, leave=False):
            if all(str(q) in writer.existing for q in qids):
                continue
            state = teacher.encode_images(frames)
            probs = teacher.score(state, questions, candidates)
            if probs.dim() == 2:
                probs = probs[None]
            for qid, p in zip(qids, probs):
                if str(qid) not in writer.existing:
                    writer.add(qid, p.float().cpu().numpy())
    return PriorStore.open(path)


# --------------------------------------------------------------------------- dataset scale


class _VideoFrames(torch.utils.data.Dataset):
    """Item i: ``(video id, uint8 frames or the error reading them)`` of the i-th pending video, decoded
    in a worker. A read error is returned, not raised: raised in a worker, it would reach the user
    wrapped in the DataLoader's multi-line report."""

    def __init__(self, frame_source, videos: Sequence[str], qids_of: Dict[str, List[str]]):
        self.frame_source, self.videos, self.qids_of = frame_source, list(videos), qids_of

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, i: int):
        video = self.videos[i]
        try:
            return video, self.frame_source(video)
        except (OSError, ValueError, RuntimeError) as e:
            return video, e


def _frames_error(video: str, qids: Sequence[str], err: BaseException) -> Exception:
    from sparc.data.frames import MissingFramesError

    more = f" and {len(qids) - 1} more of video {video!r}" if len(qids) > 1 else f" of video {video!r}"
    cls = MissingFramesError if isinstance(err, FileNotFoundError) else ValueError
    hint = "; pass --skip-missing (skip_missing=True) to skip such videos" if cls is MissingFramesError else ""
    return cls(f"qid {qids[0]!r}{more}: cannot read its frames: {err} (field: video){hint}")


def missing_videos(frame_source, groups: Dict[str, list], videos: Optional[Iterable[str]] = None
                   ) -> Dict[str, str]:
    """``{video id: why}`` for the videos (default: all of ``groups``) whose frames ``frame_source``
    cannot find (its ``locate`` raises ``FileNotFoundError``, naming the paths it tried). A source
    without ``locate`` finds nothing missing up front; its read errors surface while extracting."""
    locate = getattr(frame_source, "locate", None)
    if locate is None:
        return {}
    out = {}
    for video in (groups if videos is None else videos):
        try:
            locate(video)
        except FileNotFoundError as e:
            out[video] = str(e)
    return out


def check_no_missing(missing: Dict[str, str], groups: Dict[str, list]) -> None:
    """:class:`~sparc.data.frames.MissingFramesError` (a ``FileNotFoundError``; one line: the first
    missing video, its qids, the paths tried, how many others) when ``missing`` is not empty."""
    if not missing:
        return
    video, why = next(iter(missing.items()))
    err = _frames_error(video, [q.qid for q in groups[video]], FileNotFoundError(why))
    if len(missing) > 1:
        others = list(missing)[1:]
        shown = ", ".join(repr(v) for v in others[:3]) + (", ..." if len(others) > 3 else "")
        err = type(err)(f"{err}; {len(others)} more video(s) have no frames either: {shown}")
    raise err


def _open_if_there(path) -> Optional[PriorStore]:
    from sparc.priors.store import MANIFEST_NAME

    return PriorStore.open(path) if os.path.isfile(os.path.join(os.fspath(path), MANIFEST_NAME)) else None


def unstored_videos(groups: Dict[str, list], store) -> List[str]:
    """The videos of ``groups`` with a question not in ``store`` (a :class:`PriorStore`, a path, or
    ``None``; a path without a store yet: every video)."""
    if store is not None and not isinstance(store, PriorStore):
        store = _open_if_there(store)
    if store is None:
        return list(groups)
    return [v for v, qs in groups.items() if not all(q.qid in store for q in qs)]


SKIPPED_KEY = "skipped_videos"   # store metadata: {video id: [qids]} of the videos left out for lack of frames


class ExtractionStats(dict):
    """What a run did: videos / questions / frames scored, seconds, videos_per_s, pairs_per_s."""


def _takes_shared(teacher) -> bool:
    try:
        return "shared_candidates" in inspect.signature(teacher.score).parameters
    except (TypeError, ValueError):
        return False


def _score_video(teacher, state, questions, shared: Optional[Sequence[str]], autocast: bool) -> torch.Tensor:
    texts = [q.question for q in questions]
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if autocast else torch.autocast("cpu", enabled=False)
    with ctx:
        if shared is not None and _takes_shared(teacher):
            probs = teacher.score(state, texts, shared_candidates=list(shared))
        elif shared is not None:
            probs = teacher.score(state, texts, [list(shared)] * len(texts))
        else:
            probs = teacher.score(state, texts, [list(q.candidates) for q in questions])
    probs = probs.float()
    if probs.dim() == 2:
        probs = probs[None]
    return probs


def _process_info():
    """(index, count, wait_for_everyone) under accelerate launch / torchrun; (0, 1, no-op) otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, lambda: None
    from accelerate import PartialState

    # PartialState (unlike Accelerator) does not read ACCELERATE_USE_CPU; without a GPU it must be told.
    cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes") or not torch.cuda.is_available()
    state = PartialState(cpu=cpu)
    if state.num_processes != int(os.environ["WORLD_SIZE"]):
        raise RuntimeError(f"WORLD_SIZE is {os.environ['WORLD_SIZE']} but accelerate set up {state.num_processes} "
                           "process(es); processes would overwrite each other's output")
    return state.process_index, state.num_processes, state.wait_for_everyone


@torch.no_grad()
def extract_dataset_priors(teacher, questions, frame_source, path, *, answer_set: Optional[Sequence[str]] = None,
                           num_workers: int = 2, videos_per_shard: int = 256, dtype: str = "float32",
                           metadata: Optional[dict] = None, progress: bool = True, bf16: bool = True,
                           max_videos: Optional[int] = None, skip_missing: bool = False) -> ExtractionStats:
    """Score every question of ``questions`` (:class:`~sparc.data.questions.VideoQuestion` records)
    on its video's frames from ``frame_source`` (``video id -> uint8 [F, H, W, 3]``, e.g.
    :class:`~sparc.data.frames.FrameSource`) and store ``probs [F, C]`` per qid at ``path``. A source
    with ``variable_frames`` (:class:`~sparc.data.frames.FrameIdSource`, whose "videos" are groups of
    questions reading the same frames) gives each its ``frame_count(video)`` frames, in a padded store.

    Multiple choice: each question's own candidates (all questions must have the same number).
    Open-ended: ``answer_set`` (e.g. :func:`~sparc.data.questions.open_answer_set` of train) is every
    question's candidate list; it is recorded in the store's metadata as ``answers``.

    A video without frames is a ``FileNotFoundError`` naming it, its qids and the paths tried, raised
    before any scoring; with ``skip_missing`` such videos are left out and listed in the store's
    metadata under ``skipped_videos`` (``{video: [qids]}``: every video whose frames were not found
    and whose questions are not in the store). A rerun tries them again and updates the list.

    ``max_videos`` stops after that many videos of this run (a smoke run, or a test of resuming).
    Returns :class:`ExtractionStats` of this process's run.
    """
    from sparc.data.questions import group_by_video
    questions = list(questions)
    if not questions:
        raise ValueError("no questions to extract priors for")
    if answer_set is not None:
        answer_set = tuple(answer_set)
        num_candidates = len(answer_set)
    else:
        open_ended = [q for q in questions if q.candidates is None]
        if open_ended:
            raise ValueError(f"qid {open_ended[0].qid!r}: open-ended question, but no answer set was given "
                             "(field: candidates; pass answer_set / --answers-from)")
        num_candidates = len(questions[0].candidates)
        for q in questions:
            if len(q.candidates) != num_candidates:
                raise ValueError(f"qid {q.qid!r}: {len(q.candidates)} candidates, but qid {questions[0].qid!r} has "
                                 f"{num_candidates}; a store holds one candidate count (field: candidates)")
    groups = group_by_video(questions)
    num_frames = int(getattr(frame_source, "clips", None) or frame_source.num_frames)
    # A source whose videos differ in frame count (FrameIdSource: frames chosen per question) writes a
    # padded store: num_frames is the longest, each row keeps its own length.
    variable = bool(getattr(frame_source, "variable_frames", False))
    meta = dict(metadata or {})
    meta.setdefault("teacher", type(teacher).__name__)
    if answer_set is not None:
        meta["answers"] = list(answer_set)
    meta.pop(SKIPPED_KEY, None)

    rank, world, barrier = _process_info()
    videos = list(groups)[rank::world]
    out = os.fspath(path) if world == 1 else os.path.join(os.fspath(path), f".part-{rank:03d}-of-{world:03d}")
    before = _open_if_there(path)
    # Missing videos are found before anything is written or scored, over every process's videos, so
    # that all processes take the same decision.
    missing = missing_videos(frame_source, groups, unstored_videos(groups, before))
    if not skip_missing:
        check_no_missing(missing, groups)
    # The skipped list changes from run to run: the resume check compares the rest of the metadata.
    final_meta = dict(meta)
    if before is not None and SKIPPED_KEY in before.metadata:
        final_meta[SKIPPED_KEY] = before.metadata[SKIPPED_KEY]
    del before   # drop its memory maps
    create = dict(num_candidates=num_candidates, num_frames=num_frames, dtype=dtype, resume=True,
                  shard_size=1 << 62)   # shards are cut at video boundaries below, never by row count
    if variable:
        create["pad_frames"] = True
    if world > 1:
        if rank == 0:
            PriorStore.create(path, metadata=final_meta, **create).close()
        barrier()
    done = set(PriorStore.open(path).qids) if world > 1 else set()
    writer = PriorStore.create(out, metadata=meta if world > 1 else final_meta, **create)
    done |= set(writer.existing)
    # Video i of this process's list belongs to shard i // videos_per_shard; finished shards are skipped.
    pending = [(i, v) for i, v in enumerate(videos) if not all(q.qid in done for q in groups[v])]
    already = len(videos) - len(pending)
    skipped = {v for _, v in pending if v in missing}
    pending = [(i, v) for i, v in pending if v not in missing]
    truncated = max_videos is not None and len(pending) > max_videos
    if max_videos is not None:
        pending = pending[:max_videos]
    qids_of = {v: [q.qid for q in groups[v]] for _, v in pending}
    loader = torch.utils.data.DataLoader(_VideoFrames(frame_source, [v for _, v in pending], qids_of),
                                         batch_size=None, num_workers=num_workers,
                                         prefetch_factor=2 if num_workers else None)
    autocast = bf16 and getattr(teacher, "device", torch.device("cpu")).type == "cuda"
    stats = ExtractionStats(videos=0, questions=0, frames=0, pairs=0, seconds=0.0, skipped_videos=0)
    bar = progress_bar(already + len(pending), already, f"priors [{rank}]" if world > 1 else "priors", progress,
                       unit="video", smoothing=0.1, leave=True)
    start = time.perf_counter()
    buffered_shard = None   # the shard the writer's buffered rows belong to
    try:
        for (index, video), (loaded, frames) in zip(pending, loader):
            assert loaded == video
            if isinstance(frames, BaseException):
                if skip_missing and isinstance(frames, FileNotFoundError):
                    skipped.add(video)
                    bar.update(1)
                    continue
                raise _frames_error(video, qids_of[video], frames)
            todo = groups[video]
            state = teacher.encode_images(frames)
            probs = _score_video(teacher, state, todo, answer_set, autocast)
            expected = frame_source.frame_count(video) if variable else num_frames
            if probs.shape[1] != expected:
                raise ValueError(f"qid {todo[0].qid!r}: the teacher returned {probs.shape[1]} frames for video "
                                 f"{video!r}, expected {expected} (field: num_frames)")
            # A skipped video may have been the last of the previous shard: close that shard first.
            if buffered_shard is not None and buffered_shard != index // videos_per_shard:
                writer.flush()
            rows = [(q.qid, p) for q, p in zip(todo, probs.cpu().numpy()) if q.qid not in done]
            if rows:
                writer.add_many([r[0] for r in rows], [r[1] for r in rows])
                buffered_shard = index // videos_per_shard
            stats["videos"] += 1
            stats["questions"] += len(todo)
            stats["frames"] += probs.shape[1]
            stats["pairs"] += len(todo) * probs.shape[1]
            last_of_shard = (index + 1) % videos_per_shard == 0 or index + 1 == len(videos)
            if last_of_shard:
                writer.flush()
                buffered_shard = None
            bar.update(1)
            elapsed = time.perf_counter() - start
            bar.set_postfix(pairs_per_s=f"{stats['pairs'] / max(elapsed, 1e-9):.1f}", refresh=False)
    except BaseException:
        writer.abandon()   # the shard being filled is recomputed on resume: boundaries stay fixed
        bar.close()
        raise
    if truncated:
        writer.abandon()   # stopped early on purpose: the open shard is recomputed by the next run
    else:
        writer.close()
    bar.close()
    stats["seconds"] = time.perf_counter() - start
    stats["videos_per_s"] = stats["videos"] / max(stats["seconds"], 1e-9)
    stats["pairs_per_s"] = stats["pairs"] / max(stats["seconds"], 1e-9)
    stats["skipped_videos"] = len(skipped)
    if world > 1:
        barrier()
        if rank == 0:
            for r in range(world):
                part = os.path.join(os.fspath(path), f".part-{r:03d}-of-{world:03d}")
                if os.path.isdir(part):
                    move_shards(part, path)
    if rank == 0:
        _record_skipped(path, groups, frame_source, skipped, final_meta.get(SKIPPED_KEY) or {})
    if world > 1:
        barrier()
    return stats


def _record_skipped(path, groups, frame_source, skipped_here, skipped_before) -> None:
    """The store's ``skipped_videos``: the videos found without frames (now, or in an earlier run and not
    extracted since) whose questions are not all stored; the key is absent when there are none."""
    from sparc.priors.store import update_metadata

    store = PriorStore.open(path)
    unstored = unstored_videos(groups, store)
    if hasattr(frame_source, "locate"):   # looked up again: a video may have arrived since an earlier run
        lacking = set(missing_videos(frame_source, groups, unstored)) | set(skipped_here)
    else:
        lacking = set(skipped_here) | set(skipped_before)
    skipped = {v: [q.qid for q in groups[v]] for v in unstored if v in lacking}
    if skipped or SKIPPED_KEY in store.metadata:
        update_metadata(path, {SKIPPED_KEY: skipped or None})
