"""BLIP as an image-QA teacher: :class:`BlipTeacher` over transformers' ``BlipForQuestionAnswering``.

Li et al., "BLIP: Bootstrapping Language-Image Pre-training for Unified Vision-Language
Understanding and Generation", ICML 2022.

The three submodules of ``BlipForQuestionAnswering`` are used directly (its ``forward`` only
returns a loss and its ``generate`` only decodes greedily/beam):

* ``vision_model(pixel_values).last_hidden_state`` (after ``post_layernorm``): image tokens
  ``[F, 1 + P, D]``, once per frame (:meth:`BlipTeacher.encode_images`);
* ``text_encoder(question, encoder_hidden_states=image tokens, encoder_attention_mask=ones)``:
  the question encoding per frame, as in BLIP's ``forward``/``generate``;
* ``text_decoder(answer, encoder_hidden_states=question encoding, encoder_attention_mask=question
  mask)``: teacher-forced logits; a candidate's score is the plain summed log-likelihood of its
  tokens after the start token (answer tokens plus ``[SEP]``), pad positions excluded.

Layout relied on (transformers ``models/blip/modeling_blip.py``, ``modeling_blip_text.py``):

* ``generate`` starts the decoder from ``decoder_start_token_id = text_config.bos_token_id``
  (BLIP's ``[DEC]``, 30522 in the released checkpoints) and stops at ``text_config.sep_token_id``
  (``[SEP]``). So a candidate is decoded as ``[DEC] a [SEP]``: a string answer is tokenized as
  ``[CLS] a [SEP]`` and its first token replaced by ``bos_token_id`` (the original BLIP does the
  same: ``answer.input_ids[:, 0] = bos_token_id``).
* Questions are the tokenizer's ``[CLS] q [SEP]`` (what ``BlipProcessor`` feeds ``generate``).
* ``BlipTextLMHeadModel``'s loss shifts by one (``logits[:, :-1]`` against ``labels[:, 1:]``) but
  uses ``CrossEntropyLoss(label_smoothing=config.label_smoothing)`` and does not mask pad tokens;
  the teacher therefore never uses ``labels``: it takes ``log_softmax`` of the logits and gathers
  the next tokens itself.
* Text positions are absolute from 0 and the decoder is causal, so extra right-padding of the
  candidates changes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Tuple, Union

import torch

from sparc.teachers.likelihood import LikelihoodTeacher, Tokens, ids_and_mask, pad_sequences

__all__ = ["BlipTeacher"]


# Files ``save_pretrained`` writes for the tokenizers BLIP uses (any one means a tokenizer was saved).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")


def _load_tokenizer(path: Union[str, Path]):
    """The tokenizer saved with a local BLIP directory, or ``None`` when none was saved there. Tokenizer
    files that do not load are an error naming the directory, not a silent ``None``."""
    path = Path(path)
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as err:
        raise ValueError(f"{path}: its tokenizer files ({', '.join(n for n in TOKENIZER_FILES if (path / n).is_file())}) "
                         f"do not load: {err}") from err


class BlipTeacher(LikelihoodTeacher):
    """:class:`~sparc.teachers.base.ImageQATeacher` over a ``BlipForQuestionAnswering``.

    ``model``: a ``BlipForQuestionAnswering`` instance or a local directory (loaded with
    ``from_pretrained(path, local_files_only=True)``; nothing is downloaded; its tokenizer is loaded
    from the same directory when present and ``tokenizer`` is not given).

    ``encode_images(frames)`` runs the vision model once; ``score(image_state, question,
    candidates)`` encodes the question against every frame's image tokens and returns, per frame,
    the softmax over the candidates of their summed token log-likelihood under the decoder (with
    ``length_normalize`` divided by the number of scored tokens, answer tokens plus ``[SEP]``).
    All candidates of a question are scored in one decoder pass per chunk of ``frame_chunk`` frames.

    Questions and candidates are strings (needs ``tokenizer``) or token ids: ``question`` ``[Lq]``
    (or ``(ids, mask)``) in the form ``[CLS] q [SEP]``; ``candidates`` ``[C, La]`` in the form
    ``[DEC] a [SEP]`` right-padded with ``pad_token_id`` (or ``(ids, mask)``); id inputs are used as
    given. A list of Q questions with Q candidate lists gives ``[Q, F, C]``.
    """

    def __init__(self, model: Any, tokenizer: Any = None, length_normalize: bool = False,
                 frame_chunk: int = 64, device: Union[str, torch.device, None] = None):
        if isinstance(model, (str, Path)):
            path = Path(model)
            # Checked here: for a path that is not a local folder, transformers would take it for a hub
            # model id and report (or, without local_files_only, attempt) a download instead.
            hint = "give the local folder written by BlipForQuestionAnswering.save_pretrained (nothing is downloaded)"
            if not path.exists():
                raise FileNotFoundError(f"BLIP checkpoint {str(path)!r} does not exist; {hint}")
            if not path.is_dir():
                raise NotADirectoryError(f"BLIP checkpoint {str(path)!r} is a file, not a directory; {hint}")
            from transformers import BlipForQuestionAnswering

            model = BlipForQuestionAnswering.from_pretrained(str(path), local_files_only=True)
            if tokenizer is None:
                tokenizer = _load_tokenizer(path)
        super().__init__(model, tokenizer, length_normalize, frame_chunk, device)
        text_cfg = model.config.text_config
        self.pad_token_id = int(text_cfg.pad_token_id)
        self.bos_token_id = int(text_cfg.bos_token_id)
        self.sep_token_id = int(text_cfg.sep_token_id)
        self.max_text_len = int(text_cfg.max_position_embeddings)
        self.image_res = int(model.config.vision_config.image_size)

    @classmethod
    def from_pretrained(cls, path: Union[str, Path], **kwargs) -> "BlipTeacher":
        """A teacher from a local ``save_pretrained`` directory (``local_files_only=True``)."""
        return cls(Path(path), **kwargs)

    # ---- images: preprocess (bicubic, CLIP mean/std as BlipImageProcessor) from LikelihoodTeacher --
    @torch.no_grad()
    def encode_images(self, frames: torch.Tensor) -> torch.Tensor:
        """``frames`` -> image tokens ``[F, 1 + P, D]``, reusable by every question."""
        x = self.preprocess(frames).to(self.device)
        dtype = next(self.model.vision_model.parameters()).dtype
        return torch.cat([self.model.vision_model(pixel_values=c.to(dtype)).last_hidden_state
                          for c in x.split(self.frame_chunk)], dim=0)

    # ---- text -------------------------------------------------------------------------------------
    tokenizer_hint = "BlipTeacher(model, tokenizer=...) or a local directory saved with its tokenizer"

    def _question(self, question: Union[str, Tokens]) -> Tuple[torch.Tensor, torch.Tensor]:
        if isinstance(question, str):
            tok = self._need_tokenizer()
            ids = tok(question, add_special_tokens=True, truncation=True,
                      max_length=self.max_text_len)["input_ids"]
            ids = torch.tensor(ids, dtype=torch.long)
            return ids[None], torch.ones_like(ids)[None]
        ids, mask = ids_and_mask(question, self.pad_token_id)
        return ids.reshape(1, -1), mask.reshape(1, -1)

    def _candidates(self, candidates) -> Tuple[torch.Tensor, torch.Tensor]:
        if isinstance(candidates, (list, tuple)) and candidates and isinstance(candidates[0], str):
            tok = self._need_tokenizer()
            return pad_sequences([[self.bos_token_id] + tok.encode(c, add_special_tokens=False) + [self.sep_token_id]
                                  for c in candidates], self.pad_token_id)
        if isinstance(candidates, tuple):
            return ids_and_mask(candidates, self.pad_token_id)
        mask = (candidates != self.pad_token_id).long()
        mask[:, 0] = 1  # the start token is never padding
        return candidates, mask

    # ---- the stages -------------------------------------------------------------------------------
    def encode_question(self, image_embeds: torch.Tensor, q_ids: torch.Tensor, q_mask: torch.Tensor):
        """``image_embeds [n, T, D]``, one question ``[1, Lq]`` -> question states ``[n, Lq, H]``."""
        n = image_embeds.shape[0]
        image_atts = torch.ones(image_embeds.shape[:2], dtype=torch.long, device=image_embeds.device)
        return self.model.text_encoder(
            input_ids=q_ids.expand(n, -1), attention_mask=q_mask.expand(n, -1),
            encoder_hidden_states=image_embeds, encoder_attention_mask=image_atts,
        ).last_hidden_state

    def cand_loglik(self, question_states: torch.Tensor, question_mask: torch.Tensor,
                    answer_ids: torch.Tensor, answer_mask: torch.Tensor) -> torch.Tensor:
        """Summed ``log p(a_1..a_m | a_0, question, image)`` for every frame and candidate ``[n, C]``,
        from one batched decoder pass over ``n * C`` rows (pad positions excluded)."""
        n, C = question_states.shape[0], answer_ids.shape[0]
        states = question_states.repeat_interleave(C, dim=0)  # row f*C + c: frame f
        qmask = question_mask.expand(n, -1).repeat_interleave(C, dim=0)
        ids, mask = answer_ids.repeat(n, 1), answer_mask.repeat(n, 1)
        logits = self.model.text_decoder(
            input_ids=ids, attention_mask=mask, encoder_hidden_states=states,
            encoder_attention_mask=qmask, labels=None, use_cache=False,
        ).logits
        logp = logits[:, :-1].float().log_softmax(dim=-1)
        tok = logp.gather(-1, ids[:, 1:, None]).squeeze(-1)
        ll = (tok * mask[:, 1:].to(tok.dtype)).sum(dim=1)
        return ll.view(n, C)

    # ---- scores -----------------------------------------------------------------------------------
    @torch.no_grad()
    def log_scores(self, image_state: torch.Tensor, question, candidates) -> torch.Tensor:
        """Per-frame candidate scores ``[F, C]`` (summed or length-normalised log-likelihood)."""
        q_ids, q_mask = (t.to(self.device) for t in self._question(question))
        a_ids, a_mask = (t.to(self.device) for t in self._candidates(candidates))
        out = []
        for img in image_state.to(self.device).split(self.frame_chunk):
            states = self.encode_question(img, q_ids, q_mask)
            out.append(self.cand_loglik(states, q_mask, a_ids, a_mask))
        ll = torch.cat(out, dim=0)
        if self.length_normalize:
            ll = ll / a_mask[:, 1:].sum(dim=1).clamp(min=1).to(ll.dtype)
        return ll
