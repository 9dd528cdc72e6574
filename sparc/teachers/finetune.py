"""Fine-tuning the ALBEF image-QA teacher on a video dataset's frames (SpARC appendix A.1/A.4).

Every training example is (one uniformly sampled frame of a video, a question about that video,
that question's correct answer): ``num_frames`` frames per video (16 NExT-QA, 8 AGQA; one per clip
with ``clips``), each labelled with the answer of every question of its video.

What trains: the cross-modal part. The visual encoder and the text encoder's text-only part
(embeddings and layers below ``fusion_layer``) are frozen, run under ``no_grad`` and in eval mode
(no dropout: they are fixed feature extractors); the fusion layers (``>= fusion_layer``, with their
cross-attention to the image) and the whole answer decoder train, in train mode (dropout as ALBEF).

Loss (ALBEF ``model_vqa.ALBEF.forward(train=True)`` with xbert's ``BertLMHeadModel`` loss, checked
against salesforce/ALBEF @ b9727e4): the answer ``[CLS] a [SEP]`` is decoded teacher-forced against
the question states (``[CLS] q``, no ``[SEP]``, encoded against the frame's image tokens); logits at
positions ``0..L-2`` predict tokens ``1..L-1`` (the first token is never predicted), plain
cross-entropy (xbert has no label smoothing there), pad positions ignored, summed over the tokens of
each example, then ``weights * loss`` summed and divided by the number of images: with one answer of
weight 1 per example that is the batch mean. ALBEF's VQA run also distils from a momentum model
(``alpha = 0.4``); the paper describes no distillation for the teacher's fine-tuning and there is no
momentum copy here, so the loss is the plain (``alpha = 0``) one. Token layout as the teacher uses it
at inference (:class:`~sparc.teachers.albef.ALBEFTeacher`), so training and scoring see the same input.

Optimizer. The paper: "Adam optimizer with learning rate 2e-5 and weight decay 0.01". ALBEF's VQA
fine-tuning (``configs/VQA.yaml``: ``optimizer: {opt: adamW, lr: 2e-5, weight_decay: 0.02}``) builds it
with ``optim/optim_factory.create_optimizer``: ``torch.optim.AdamW`` with two parameter groups, weight
decay on the weight matrices and none on biases and 1-D parameters (LayerNorm), frozen parameters
left out. The paper's lr 2e-5 is exactly ALBEF's VQA lr, which says the authors ran ALBEF's VQA
machinery with a changed weight decay; "Adam" is the family name. So the default is
``optimizer="adamw"``: ALBEF's AdamW with its no-decay groups, weight decay 0.01 (the paper's value).
``optimizer="adam"`` gives the literal reading (``torch.optim.Adam``, L2 in the gradient, same groups).
``optimizer="sgd"`` (plain SGD, same groups) is not the paper's: its step is proportional to the gradient,
so runs that should compute the same gradient (2 processes vs 1) end with the same weights to float32
rounding, where Adam's first step (about lr * sign(g)) turns a rounding difference in a near-zero
gradient component into a full step.
Learning rate: constant (the paper gives no schedule; ALBEF's cosine/warm-up schedule is not used).

Data and batches. Decoding frames and running the frozen ViT is the expensive part, and a video's
frames serve every question of that video, so the epoch is planned in *pools*: the videos are
shuffled (from ``seed`` and the epoch only), cut into pools of ``pool_videos`` consecutive videos, and
all (frame, question) pairs of a pool are shuffled and cut into batches of ``batch_size`` (the last
batch of a pool may be smaller). DataLoader workers decode and preprocess one pool at a time; each
frame is decoded and encoded once per epoch, however many questions its video has. Every pair is
seen exactly once per epoch. With several processes, each global batch of ``batch_size * processes``
pairs is split between them and the loss is scaled so that DDP's gradient average equals the mean
over the global batch.

Resume: checkpoints (:class:`sparc.resumable.ResumableJob`'s atomic folders, as training writes them)
record (epoch, pool, batch, step) and accelerate's model/optimizer/RNG state; a resumed run ends with exactly the weights of an
uninterrupted one. The final weights are written atomically as ``albef-finetuned.safetensors`` in
ALBEF's key layout (loads strictly with :func:`~sparc.teachers.load.build_albef`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "FINETUNED_NAME",
    "FinetuneResult",
    "answer_lm_loss",
    "encode_question_finetune",
    "epoch_plan",
    "finetune_teacher",
    "freeze_for_finetuning",
    "make_optimizer",
    "set_finetune_mode",
    "trainable_parameter_names",
]

FINETUNED_NAME = "albef-finetuned.safetensors"


@dataclass
class FinetuneResult:
    losses: List[float] = field(default_factory=list)  # per optimizer step (this process)
    global_step: int = 0
    completed: bool = False          # the whole schedule ran (not stopped by max_steps)
    output_path: Optional[str] = None
    trainable: List[str] = field(default_factory=list)


# =========================================================================== the job


class _CrossModal(nn.Module):
    """The part that trains, as one module for ``accelerator.prepare`` (DDP, autocast): question
    encoding against given image tokens and the answer decoder -> per-example losses ``[N]``."""

    def __init__(self, albef):
        super().__init__()
        self.albef = albef

    def train(self, mode: bool = True):
        super().train(mode)
        if mode:
            set_finetune_mode(self.albef)
        return self

    def forward(self, image_embeds, q_ids, q_mask, a_ids, a_mask):
        states = encode_question_finetune(self.albef, image_embeds, q_ids, q_mask)
        logits = self.albef.decode(a_ids, a_mask, states, q_mask)
        return answer_lm_loss(logits, a_ids, self.albef.pad_token_id)


class _PoolFrames(torch.utils.data.Dataset):
    """Item = a tuple of video ids -> preprocessed frames ``[V, F, 3, R, R]`` (runs in the workers), or
    the ValueError saying which video could not be read: returned, not raised, since a worker's
    exception reaches the user wrapped in the DataLoader's multi-line report."""

    def __init__(self, frame_source, image_res: int, frames_per_video: int, qids_of: Dict[str, List[str]]):
        self.frame_source, self.image_res, self.frames_per_video = frame_source, image_res, frames_per_video
        self.qids_of = qids_of

    def __len__(self):  # items are addressed by the sampler's tuples
        return 0

    def __getitem__(self, videos: Tuple[str, ...]):
        try:
            return self._load(videos)
        except ValueError as e:
            return e

    def _load(self, videos: Tuple[str, ...]) -> torch.Tensor:
        from sparc.teachers.likelihood import preprocess_frames

        out = []
        for video in videos:
            where = f"video {video!r} (qid {self.qids_of[video][0]!r}, field: video)"
            try:
                frames = self.frame_source(video)
            except (ValueError, OSError) as e:
                raise ValueError(f"{where}: cannot read its frames: {e}") from e
            if frames.ndim != 4 or frames.shape[0] != self.frames_per_video:
                raise ValueError(f"{where}: expected {self.frames_per_video} frames, got a tensor of shape "
                                 f"{tuple(frames.shape)}")
            out.append(preprocess_frames(frames, self.image_res))
        return torch.stack(out)


def _frames_per_video(frame_source) -> int:
    from sparc.data.frames import uniform_indices

    n = int(frame_source.num_frames)
    return len(uniform_indices(n, n, getattr(frame_source, "clips", None), getattr(frame_source, "frames_per_clip", None)))


def _tokenize(questions, tokenizer, model) -> Tuple[Dict[str, List[int]], Dict[str, List[int]]]:
    """qid -> question ids ``[CLS] q`` and answer ids ``[CLS] a [SEP]`` (the teacher's layout);
    bad input raises naming the qid and the field."""
    q_limit = int(model.text_encoder.config.max_position_embeddings)
    a_limit = int(model.text_decoder.config.max_position_embeddings)
    qs, ans = {}, {}
    for q in questions:
        if not isinstance(q.question, str) or not q.question.strip():
            raise ValueError(f"qid {q.qid!r}: empty question text (field: question)")
        if isinstance(q.answer, str):
            answer = q.answer
        elif q.candidates is None:
            raise ValueError(f"qid {q.qid!r}: answer index {q.answer!r} but no candidates (field: candidates)")
        elif not 0 <= int(q.answer) < len(q.candidates):
            raise ValueError(f"qid {q.qid!r}: answer index {q.answer} out of range for {len(q.candidates)} "
                             "candidates (field: answer)")
        else:
            answer = q.candidates[int(q.answer)]
        if not isinstance(answer, str) or not answer.strip():
            raise ValueError(f"qid {q.qid!r}: the answer text is missing or empty (field: answer)")
        words = tokenizer.encode(q.question, add_special_tokens=False)
        qs[q.qid] = [tokenizer.cls_token_id] + words[: q_limit - 1]
        a = tokenizer.encode(answer, add_special_tokens=False)[: a_limit - 2]
        if not a:
            raise ValueError(f"qid {q.qid!r}: the answer {answer!r} has no tokens (field: answer)")
        ans[q.qid] = [tokenizer.cls_token_id] + a + [tokenizer.sep_token_id]
    return qs, ans


def finetune_teacher(
    model,
    tokenizer,
    questions: Sequence,
    frame_source,
    *,
    epochs: int = 5,
    lr: float = 2e-5,
    weight_decay: float = 0.01,
    optimizer: str = "adamw",
    batch_size: int = 32,
    pool_videos: int = 8,
    seed: int = 0,
    output_dir: Optional[str] = None,
    checkpoint_every: int = 0,
    keep_checkpoints: int = 2,
    max_steps: Optional[int] = None,
    mixed_precision: str = "no",
    num_workers: int = 0,
    progress: bool = True,
    accelerator=None,
    frames_per_video: Optional[int] = None,
) -> FinetuneResult:
    """Fine-tune ``model`` (an :class:`~sparc.teachers.albef.ALBEF`, changed in place) on
    ``questions`` (:class:`~sparc.data.questions.VideoQuestion`) with frames from ``frame_source``
    (a :class:`~sparc.data.frames.FrameSource`, or any ``video_id -> uint8 [F, H, W, 3]`` callable
    with ``frames_per_video`` given). See the module docstring for the schedule, the loss and the
    optimizer. ``checkpoint_every``: optimizer steps between checkpoints (0: at each epoch end);
    with ``output_dir`` the run resumes from the newest checkpoint there and writes
    ``output_dir/albef-finetuned.safetensors`` at the end (also when stopped by ``max_steps``,
    with a checkpoint to resume from)."""
    from accelerate.utils import set_seed

    from sparc.data.questions import group_by_video
    from sparc.resumable import ResumableJob, progress_bar
    from sparc.train import TrainConfig, make_accelerator

    if epochs < 1 or batch_size < 1 or pool_videos < 1:
        raise ValueError("epochs, batch_size and pool_videos must be >= 1")
    questions = list(questions)
    if not questions:
        raise ValueError("no questions to fine-tune on")
    groups = group_by_video(questions)
    q_tokens, a_tokens = _tokenize(questions, tokenizer, model)
    if frames_per_video is None:
        frames_per_video = _frames_per_video(frame_source)
    if hasattr(frame_source, "locate"):  # fail before training, naming a qid, when a video is absent
        for video, qs in groups.items():
            try:
                frame_source.locate(video)
            except FileNotFoundError as e:
                raise FileNotFoundError(f"qid {qs[0].qid!r}: no frames for its video (field: video): {e}") from None
    videos = list(groups)
    qids_of = {v: [q.qid for q in qs] for v, qs in groups.items()}

    trainable = freeze_for_finetuning(model)
    if accelerator is None:  # of a TrainConfig the accelerator reads only these; the loop below is this job's own
        accelerator = make_accelerator(TrainConfig(mixed_precision=mixed_precision, output_dir=output_dir,
                                                   log_with=None))
    set_seed(seed, device_specific=True)
    world, rank = accelerator.num_processes, accelerator.process_index
    wrapper = _CrossModal(model)
    opt = make_optimizer(model, lr=lr, weight_decay=weight_decay, kind=optimizer)
    wrapper, opt = accelerator.prepare(wrapper, opt)
    albef = accelerator.unwrap_model(wrapper).albef
    device = accelerator.device
    image_res = albef.visual_encoder.patch_embed.img_size[0]
    pad = albef.pad_token_id

    result = FinetuneResult(trainable=trainable)
    job = ResumableJob(output_dir, ("epoch", "pool", "batch"), keep=keep_checkpoints)
    job.restore(accelerator)
    result.global_step = job.global_step

    sizes = [len(groups[v]) for v in videos]
    plans = [epoch_plan(sizes, frames_per_video, batch_size * world, pool_videos, seed, e) for e in range(epochs)]
    total = sum(len(b) for plan in plans for _, b in plan)
    if max_steps:
        total = min(total, max_steps)
    bar = progress_bar(total, result.global_step, "teacher-finetune", progress and accelerator.is_local_main_process)
    dataset = _PoolFrames(frame_source, image_res, frames_per_video, qids_of)
    wrapper.train()
    done = result.global_step >= max_steps if max_steps else False
    last_saved = result.global_step if job.resumed else -1

    def save(epoch, pool, batch):
        nonlocal last_saved
        plan = plans[epoch] if epoch < epochs else []
        if epoch < epochs and batch >= len(plan[pool][1]):
            pool, batch = pool + 1, 0
        if epoch < epochs and pool >= len(plan):
            epoch, pool = epoch + 1, 0
        job.save(accelerator, result.global_step, epoch=epoch, pool=pool, batch=batch)
        last_saved = result.global_step

    for epoch in range(job.start("epoch"), epochs):
        if done:
            break
        plan = plans[epoch]
        first_pool = job.start("pool", epoch)
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=None, sampler=[tuple(videos[i] for i in pool) for pool, _ in plan[first_pool:]],
            num_workers=num_workers, generator=torch.Generator().manual_seed(seed))
        for pool_index, frames in enumerate(loader, start=first_pool):
            if isinstance(frames, Exception):
                raise frames
            pool_videos_, batches = plan[pool_index]
            V, Fr = frames.shape[:2]
            with torch.no_grad(), accelerator.autocast():
                flat = frames.flatten(0, 1).to(device)
                embeds = torch.cat([albef.encode_image(c) for c in flat.split(64)])
                embeds = embeds.view(V, Fr, *embeds.shape[1:])
            first_batch = job.start("batch", epoch, pool_index)
            for b in range(first_batch, len(batches)):
                pairs = batches[b]
                mine = pairs[rank::world]
                weight = torch.ones(max(len(mine), 1), device=device)
                if not mine:  # every process must take part in the step: a zero-weight stand-in
                    mine, weight = pairs[:1], torch.zeros(1, device=device)
                qids = [groups[videos[pool_videos_[v]]][q].qid for v, _, q in mine]
                q_ids, q_mask = _pad([q_tokens[x] for x in qids], pad, device)
                a_ids, a_mask = _pad([a_tokens[x] for x in qids], pad, device)
                img = embeds[[v for v, _, _ in mine], [f for _, f, _ in mine]]
                per_example = wrapper(img, q_ids, q_mask, a_ids, a_mask)
                loss = (per_example * weight).sum() * (world / len(pairs))
                accelerator.backward(loss)
                opt.step()
                opt.zero_grad(set_to_none=True)
                result.global_step += 1
                result.losses.append(float(loss.detach()))
                bar.update(1)
                bar.set_postfix(loss=f"{result.losses[-1]:.3f}", epoch=epoch)
                if output_dir and checkpoint_every and result.global_step % checkpoint_every == 0:
                    save(epoch, pool_index, b + 1)
                if max_steps and result.global_step >= max_steps:
                    done = True
                    if output_dir and last_saved != result.global_step:
                        save(epoch, pool_index, b + 1)
                    break
            if done:
                break
        if output_dir and not checkpoint_every and not done:
            save(epoch + 1, 0, 0)
    bar.close()
    result.completed = result.global_step >= total_steps(plans)
    if output_dir:
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            result.output_path = save_albef_weights(albef, os.path.join(output_dir, FINETUNED_NAME))
        accelerator.wait_for_everyone()
    model.eval()
    return result


def total_steps(plans) -> int:
    return sum(len(b) for plan in plans for _, b in plan)


def _pad(seqs, pad_id, device):
    from sparc.teachers.likelihood import pad_sequences

    ids, mask = pad_sequences(seqs, pad_id)
    return ids.to(device), mask.to(device)


def save_albef_weights(model, path: str) -> str:
    """``model.state_dict()`` as safetensors at ``path``, written under a temporary name then renamed
    (tied tensors are stored as separate copies, as ALBEF's checkpoints hold them)."""
    from safetensors.torch import save_file

    from sparc.resumable import atomic_path

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    sd = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(sd, tmp)
    return path


# =========================================================================== pure functions


def trainable_parameter_names(model) -> List[str]:
    """The cross-modal part of an ALBEF: text-encoder layers ``>= fusion_layer`` and the whole
    answer decoder (its tied word embedding/LM head included), in ``named_parameters`` order."""
    fusion = int(model.text_encoder.config.fusion_layer)
    names = []
    for name, _ in model.named_parameters():
        if name.startswith("text_decoder."):
            names.append(name)
        elif name.startswith("text_encoder.encoder.layer."):
            if int(name.split(".")[3]) >= fusion:
                names.append(name)
    return names


def freeze_for_finetuning(model) -> List[str]:
    """``requires_grad`` on exactly :func:`trainable_parameter_names`; returns them."""
    names = trainable_parameter_names(model)
    keep = set(names)
    for name, p in model.named_parameters():
        p.requires_grad_(name in keep)
    return names


def set_finetune_mode(model) -> None:
    """Train mode for the cross-modal part, eval mode (no dropout) for the frozen encoders."""
    model.train()
    model.visual_encoder.eval()
    enc = model.text_encoder
    enc.embeddings.eval()
    for layer in enc.encoder.layer[: int(enc.config.fusion_layer)]:
        layer.eval()


def encode_question_finetune(model, image_embeds: torch.Tensor, q_ids: torch.Tensor, q_mask: torch.Tensor) -> torch.Tensor:
    """``model.encode_question`` with the text-only part (embeddings, layers below ``fusion_layer``)
    under ``no_grad``; the fusion layers keep their graph. Same values as ``encode_question``."""
    enc = model.text_encoder
    fusion = int(enc.config.fusion_layer)
    layers = enc.encoder.layer
    with torch.no_grad():
        x = enc.embeddings(q_ids)
        mask = enc._additive(q_mask, -10000.0, x.dtype)
        for layer in layers[:fusion]:
            x = layer(x, mask)
    image_mask = enc._additive(torch.ones(image_embeds.shape[:2], device=x.device), torch.finfo(x.dtype).min, x.dtype)
    for layer in layers[fusion:]:
        x = layer(x, mask, image_embeds, image_mask)
    return x


def answer_lm_loss(logits: torch.Tensor, answer_ids: torch.Tensor, pad_id: int = 0) -> torch.Tensor:
    """ALBEF's VQA loss per example ``[N]``: logits ``[N, L, V]`` at positions ``0..L-2`` predict
    ``answer_ids[:, 1:]`` (the first token is given, never predicted); cross-entropy without label
    smoothing, pad targets ignored, summed over the tokens. The training loss is its mean."""
    target = answer_ids[:, 1:].masked_fill(answer_ids[:, 1:] == pad_id, -100)
    logits = logits[:, :-1].float()
    tok = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none", ignore_index=-100)
    return tok.view(target.shape).sum(dim=1)


def make_optimizer(model, lr: float = 2e-5, weight_decay: float = 0.01, kind: str = "adamw"):
    """ALBEF's ``create_optimizer`` groups over the parameters that require grad: weight decay on
    matrices, none on biases and 1-D parameters. ``kind``: ``"adamw"`` (ALBEF), ``"adam"`` or ``"sgd"`` (a step proportional to the gradient)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    groups = [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]
    if kind == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if kind == "adam":
        return torch.optim.Adam(groups, lr=lr)
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=lr)
    raise ValueError(f"optimizer {kind!r}: choose 'adamw', 'adam' or 'sgd'")


def epoch_plan(questions_per_video: Sequence[int], frames_per_video: int, batch_size: int, pool_videos: int,
               seed: int, epoch: int) -> List[Tuple[Tuple[int, ...], List[List[Tuple[int, int, int]]]]]:
    """One epoch's order, a function of (seed, epoch) only: a list of pools ``(video indices,
    batches)``; a batch is a list of ``(position of the video in the pool, frame, question index
    within the video)``. Videos shuffled, cut into pools of ``pool_videos``; each pool's pairs
    (every frame x every question of its videos) shuffled and cut into batches of ``batch_size``."""
    g = torch.Generator().manual_seed(seed * 100003 + epoch)
    order = torch.randperm(len(questions_per_video), generator=g).tolist()
    plan = []
    for start in range(0, len(order), pool_videos):
        pool = tuple(order[start:start + pool_videos])
        pairs = [(v, f, q) for v, vid in enumerate(pool) for f in range(frames_per_video)
                 for q in range(questions_per_video[vid])]
        if not pairs:
            continue
        perm = torch.randperm(len(pairs), generator=g).tolist()
        pairs = [pairs[i] for i in perm]
        plan.append((pool, [pairs[i:i + batch_size] for i in range(0, len(pairs), batch_size)]))
    return plan
