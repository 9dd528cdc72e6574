"""Run an image-QA teacher over every (frame, question) of a dataset and write the probabilities to a
:class:`~sparc.priors.store.PriorStore` (``sparc extract-priors``).

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
"""

from __future__ import annotations

import inspect
import os
import time
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch

from sparc.priors.store import PriorStore, move_shards

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
    """Item i: ``(video id, uint8 frames)`` of the i-th pending video, decoded in a worker."""

    def __init__(self, frame_source, videos: Sequence[str], qids_of: Dict[str, List[str]]):
        self.frame_source, self.videos, self.qids_of = frame_source, list(videos), qids_of

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, i: int):
        video = self.videos[i]
        try:
            frames = self.frame_source(video)
        except (OSError, ValueError, RuntimeError) as e:
            qids = self.qids_of[video]
            raise ValueError(f"qid {qids[0]!r} (and {len(qids) - 1} more of video {video!r}): cannot read its "
                             f"frames: {e} (field: video)") from e
        return video, frames


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
                           max_videos: Optional[int] = None) -> ExtractionStats:
    """Score every question of ``questions`` (:class:`~sparc.data.questions.VideoQuestion` records)
    on its video's frames from ``frame_source`` (``video id -> uint8 [F, H, W, 3]``, e.g.
    :class:`~sparc.data.frames.FrameSource`) and store ``probs [F, C]`` per qid at ``path``.

    Multiple choice: each question's own candidates (all questions must have the same number).
    Open-ended: ``answer_set`` (e.g. :func:`~sparc.data.questions.open_answer_set` of train) is every
    question's candidate list; it is recorded in the store's metadata as ``answers``.

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
    meta = dict(metadata or {})
    meta.setdefault("teacher", type(teacher).__name__)
    if answer_set is not None:
        meta["answers"] = list(answer_set)

    rank, world, barrier = _process_info()
    videos = list(groups)[rank::world]
    out = os.fspath(path) if world == 1 else os.path.join(os.fspath(path), f".part-{rank:03d}-of-{world:03d}")
    create = dict(num_candidates=num_candidates, num_frames=num_frames, dtype=dtype, metadata=meta, resume=True,
                  shard_size=1 << 62)   # shards are cut at video boundaries below, never by row count
    if world > 1:
        if rank == 0:
            PriorStore.create(path, **create).close()
        barrier()
    done = set(PriorStore.open(path).qids) if world > 1 else set()
    writer = PriorStore.create(out, **create)
    done |= set(writer.existing)
    # Video i of this process's list belongs to shard i // videos_per_shard; finished shards are skipped.
    pending = [(i, v) for i, v in enumerate(videos) if not all(q.qid in done for q in groups[v])]
    if max_videos is not None:
        pending = pending[:max_videos]
    qids_of = {v: [q.qid for q in groups[v]] for _, v in pending}
    loader = torch.utils.data.DataLoader(_VideoFrames(frame_source, [v for _, v in pending], qids_of),
                                         batch_size=None, num_workers=num_workers,
                                         prefetch_factor=2 if num_workers else None)
    autocast = bf16 and getattr(teacher, "device", torch.device("cpu")).type == "cuda"
    stats = ExtractionStats(videos=0, questions=0, frames=0, pairs=0, seconds=0.0)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(pending), unit="video", desc=f"priors [{rank}]" if world > 1 else "priors",
               disable=not progress, smoothing=0.1)
    start = time.perf_counter()
    try:
        for (index, video), (loaded, frames) in zip(pending, loader):
            assert loaded == video
            todo = groups[video]
            state = teacher.encode_images(frames)
            probs = _score_video(teacher, state, todo, answer_set, autocast)
            if probs.shape[1] != num_frames:
                raise ValueError(f"qid {todo[0].qid!r}: the teacher returned {probs.shape[1]} frames for video "
                                 f"{video!r}, expected {num_frames} (field: num_frames)")
            rows = [(q.qid, p) for q, p in zip(todo, probs.cpu().numpy()) if q.qid not in done]
            if rows:
                writer.add_many([r[0] for r in rows], [r[1] for r in rows])
            stats["videos"] += 1
            stats["questions"] += len(todo)
            stats["frames"] += probs.shape[1]
            stats["pairs"] += len(todo) * probs.shape[1]
            last_of_shard = (index + 1) % videos_per_shard == 0 or index + 1 == len(videos)
            if last_of_shard:
                writer.flush()
            bar.update(1)
            elapsed = time.perf_counter() - start
            bar.set_postfix(pairs_per_s=f"{stats['pairs'] / max(elapsed, 1e-9):.1f}", refresh=False)
    except BaseException:
        writer.abandon()   # the shard being filled is recomputed on resume: boundaries stay fixed
        bar.close()
        raise
    if max_videos is not None and pending and pending[-1][0] + 1 != len(videos):
        writer.abandon()   # stopped early on purpose: the open shard is recomputed by the next run
    else:
        writer.close()
    bar.close()
    stats["seconds"] = time.perf_counter() - start
    stats["videos_per_s"] = stats["videos"] / max(stats["seconds"], 1e-9)
    stats["pairs_per_s"] = stats["pairs"] / max(stats["seconds"], 1e-9)
    if world > 1:
        barrier()
        if rank == 0:
            for r in range(world):
                part = os.path.join(os.fspath(path), f".part-{r:03d}-of-{world:03d}")
                if os.path.isdir(part):
                    move_shards(part, path)
        barrier()
    return stats


# --------------------------------------------------------------------------- command line


def add_subcommand(sub) -> None:
    """Register ``sparc extract-priors``."""
    from sparc.teachers.load import add_frame_arguments, add_teacher_arguments

    p = sub.add_parser("extract-priors", help="score every (frame, question) of a dataset with the image-QA teacher "
                                              "into a prior store (resumable; accelerate launch splits videos)")
    add_frame_arguments(p)
    add_teacher_arguments(p)
    p.add_argument("--out", required=True, metavar="STORE", help="prior store directory to write (or resume)")
    p.add_argument("--answers-from", default=None, metavar="TRAIN_FILE",
                   help="open-ended datasets: candidates = answers occurring more than once in this train file")
    p.add_argument("--min-answer-count", type=int, default=2, metavar="N",
                   help="with --answers-from: keep answers seen at least N times (default 2, SpARC 3.1)")
    p.add_argument("--scoring", default="sum", choices=("sum", "mean", "albef_rank"),
                   help="candidate score: summed log-likelihood (default), length-normalised, or ALBEF's rank_answer")
    p.add_argument("--rank-k", type=int, default=None, metavar="K", help="albef_rank: decode only the K candidates with the most likely first token per (question, "
                        "frame), as ALBEF's rank_answer (128 there); the others get probability 0")
    p.add_argument("--dtype", default="float16", choices=("float16", "float32"),
                   help="storage precision (default float16: half the disk, 3 significant digits)")
    p.add_argument("--videos-per-shard", type=int, default=256, metavar="N", help="videos per store shard (default 256)")
    p.add_argument("--num-workers", type=int, default=2, metavar="N", help="frame-decoding workers (default 2)")
    p.add_argument("--device", default=None, help="cuda / cpu (default: cuda when available; per process under accelerate)")
    p.add_argument("--no-bf16", action="store_true", help="on CUDA, run the teacher in float32 instead of bf16 autocast")
    p.add_argument("--frame-chunk", type=int, default=64, metavar="N", help="frames per vision pass (memory only)")
    p.add_argument("--max-videos", type=int, default=None, metavar="N", help="stop after N videos (smoke runs)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)


def _device(requested: Optional[str]) -> torch.device:
    if requested:
        return torch.device(requested)
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def _run(args) -> int:
    import sys

    from sparc.data.questions import open_answer_set, read_questions
    from sparc.teachers.load import frame_source_from_args, teacher_from_args

    try:
        questions = read_questions(args.questions)
        answers = None
        if args.answers_from:
            answers = open_answer_set(read_questions(args.answers_from), args.min_answer_count)
            if not answers:
                raise ValueError(f"{args.answers_from}: no answer occurs {args.min_answer_count} times (field: answer)")
        frames = frame_source_from_args(args)
        kwargs = {"frame_chunk": args.frame_chunk, "device": _device(args.device)}
        if getattr(args, "teacher", "albef") == "albef":
            kwargs.update(scoring=args.scoring, rank_k=args.rank_k)
        elif args.scoring != "sum":
            kwargs["length_normalize"] = args.scoring == "mean"
        teacher = teacher_from_args(args, **kwargs)
        meta = {"teacher": getattr(args, "teacher", "albef"), "checkpoint": os.path.basename(args.checkpoint or ""),
                "scoring": args.scoring, "num_frames": args.num_frames, "clips": args.clips,
                "questions": os.path.basename(args.questions)}
        stats = extract_dataset_priors(teacher, questions, frames, args.out, answer_set=answers,
                                       num_workers=args.num_workers, videos_per_shard=args.videos_per_shard,
                                       dtype=args.dtype, metadata=meta, progress=not args.no_progress,
                                       bf16=not args.no_bf16, max_videos=args.max_videos)
    except (ValueError, KeyError, OSError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"sparc extract-priors: error: {msg}", file=sys.stderr)
        return 2
    print(f"{stats['videos']} videos, {stats['questions']} questions, {stats['pairs']} (frame, question) pairs in "
          f"{stats['seconds']:.1f} s ({stats['videos_per_s']:.2f} videos/s, {stats['pairs_per_s']:.1f} pairs/s) "
          f"-> {args.out}")
    return 0
