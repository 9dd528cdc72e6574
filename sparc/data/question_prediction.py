"""Question prediction: a reader's clips turned into "which question belongs to this context", the
self-supervised pretraining task of Kim et al., "Self-supervised Pre-training and Contrastive
Representation Learning for Multiple-choice Video QA" (AAAI 2021, paper 002 in the shared papers),
section 3.2 "Self-supervised Pre-training".

Item ``i`` of :class:`QuestionPrediction` is the reader's item ``i`` (the same fields, the same video,
subtitles and labels) with its ``C`` hypotheses rebuilt as "question_k + [MASK]":

- **candidates**: ``C`` = the reader's candidate count (5 on TVQA, TVQA+ and DramaQA), so the QA
  model and its head are trained unchanged. One candidate is the clip's own question; the others are
  negatives: questions of *other* clips ("we select questions from other video clips that are not
  related to the given video clip"). The clip is the unit questions belong to: ``vid_name`` on TVQA
  and TVQA+; on DramaQA the scene (``AnotherMissOh{EE}_{SSS}``), since a scene-level question's clip
  contains the shots the shot-level questions ask about. A negative never has the own question's
  text (two clips asking the same words would make the target ambiguous), and the negatives' texts
  differ from each other. When the other clips hold fewer than ``C - 1`` distinct questions (only a
  tiny split does), the rest comes from the clip's own other questions, never its own; the items
  that needed this are counted (:attr:`QuestionPrediction.fallback_items`). A split with fewer than
  ``C`` distinct questions is an error naming the question.
- **target**: ``answer`` is the own question's position among the candidates, drawn uniformly.
- **the answer**: replaced by one mask token ("we replace the part corresponding to the answer option
  in the input to a single [MASK] token: [CLS] q_n [SEP] [MASK] [SEP] S_t [SEP] o_t [SEP]"). Per
  input kind:

  * word ids (DramaQA's ``qas`` for HGA): the id of the vocabulary word :data:`MASK` (``"<mask>"``,
    a word no text produces: :func:`sparc.data.words.words_of` drops the brackets). Its embedding row
    is the model's, learned in pretraining and kept by the main stage (which never feeds it).
    :func:`with_mask_word` appends it to a vocabulary.
  * token features (STAGE's ``qas_bert``: TVQA+'s released BERT token features, TVQA's GloVe
    vectors): the zero vector with its ``qas_mask`` on (a padding cell has its mask off), a
    constant, content-free token where the answer was. The released features come from a fine-tuned
    BERT whose output at a [MASK] cannot be reproduced without that BERT; a fixed vector adds no
    parameter, so the pretrained state dict is exactly the main stage's. STAGE's word ids ``qas``
    (read only for the predicted boxes, never embedded) get the unknown word's id there.

  Every hypothesis keeps its mask: a question is cut to ``max_qa_l - 1`` (STAGE) or ``max_words - 1``
  (DramaQA) words first.
- **labels kept**: the span labels and ``anno_st_idx`` / ``anno_ed_idx`` are the own question's,
  which is the target; STAGE's ``att_labels`` keep the rows of the own question's words (the first
  rows of its ground-truth hypothesis) and lose the answer words' rows.

Draws are seeded per ``(seed, epoch, item)`` (numpy's generator over that triple), not from a stream:
the same item gets the same candidates in any order, in any data-loader worker or process, and in a
resumed run. :meth:`QuestionPrediction.set_epoch` moves to the next epoch's draws (accelerate's data
loader calls it on a dataset that has it).
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

from sparc.data.words import WordVocabulary, words_of

MASK = "<mask>"

__all__ = ["QuestionPrediction", "MASK", "with_mask_word", "draw_candidates", "question_pool"]


def with_mask_word(vocabulary: WordVocabulary) -> WordVocabulary:
    """``vocabulary`` with :data:`MASK` appended (every other word keeps its id); itself if it has it."""
    if MASK in vocabulary.index:
        return vocabulary
    return WordVocabulary(list(vocabulary.words) + [MASK])


# --------------------------------------------------------------------------- the draws (pure)


def question_pool(groups: Sequence[str], texts: Sequence[str]) -> Dict[str, np.ndarray]:
    """What the draws need, computed once: ``group`` / ``text`` (an integer id per item), and
    ``other`` (per item, how many distinct texts questions of other groups have, the own text not
    counted)."""
    group_ids = {g: n for n, g in enumerate(dict.fromkeys(groups))}
    text_ids = {t: n for n, t in enumerate(dict.fromkeys(texts))}
    group = np.asarray([group_ids[g] for g in groups], dtype=np.int64)
    text = np.asarray([text_ids[t] for t in texts], dtype=np.int64)
    # a text is "outside" group g unless every question with it is in g
    groups_of_text: Dict[int, set] = {}
    for g, t in zip(group.tolist(), text.tolist()):
        groups_of_text.setdefault(t, set()).add(g)
    only_in = np.zeros(len(group_ids), dtype=np.int64)
    for gs in groups_of_text.values():
        if len(gs) == 1:
            only_in[next(iter(gs))] += 1
    own_outside = np.asarray([len(groups_of_text[t]) > 1 for t in text.tolist()], dtype=np.int64)
    other = len(text_ids) - only_in[group] - own_outside
    return {"group": group, "text": text, "other": other}


def _pick(rng: np.random.Generator, indices: np.ndarray, text: np.ndarray, taken: set, need: int) -> List[int]:
    """Up to ``need`` of ``indices`` in a random order, one per text not in ``taken`` (updated)."""
    out: List[int] = []
    for j in rng.permutation(indices).tolist():
        if len(out) == need:
            break
        if int(text[j]) not in taken:
            taken.add(int(text[j]))
            out.append(j)
    return out


def draw_candidates(pool: Dict[str, np.ndarray], i: int, num_candidates: int, seed: int,
                    epoch: int = 0) -> Tuple[List[int], int, bool]:
    """``(item indices of the C candidates, the target position, whether the clip's own other
    questions filled in)`` for item ``i``: its own question at a uniform position, ``C - 1`` negatives
    of other groups with distinct texts other than its own (module docstring)."""
    group, text = pool["group"], pool["text"]
    rng = np.random.default_rng([int(seed), int(epoch), int(i)])
    need, n = num_candidates - 1, len(group)
    taken = {int(text[i])}
    negatives: List[int] = []
    if pool["other"][i] >= need:
        # rejection sampling over the whole split: a clip holds a tiny share of its questions
        for _ in range(20 * need + 20):
            j = int(rng.integers(n))
            if group[j] != group[i] and int(text[j]) not in taken:
                taken.add(int(text[j]))
                negatives.append(j)
                if len(negatives) == need:
                    break
        if len(negatives) < need:   # unlucky or crowded: enumerate what is left
            outside = np.flatnonzero(group != group[i])
            negatives += _pick(rng, outside, text, taken, need - len(negatives))
        fallback = False
    else:
        negatives = _pick(rng, np.flatnonzero(group != group[i]), text, taken, need)
        own = np.flatnonzero(group == group[i])
        negatives += _pick(rng, own[own != i], text, taken, need - len(negatives))
        fallback = True
    if len(negatives) < need:
        raise ValueError(f"item {i}: {len(negatives)} distinct other questions for {need} negatives")
    target = int(rng.integers(num_candidates))
    return negatives[:target] + [int(i)] + negatives[target:], target, fallback


# --------------------------------------------------------------------------- the readers' hypotheses


class _STAGEHypotheses:
    """"question_k + [MASK]" as STAGE's ``qas_bert`` / ``qas_mask`` / ``qas`` (TVQA+ BERT tokens,
    TVQA GloVe vectors) over a :class:`~sparc.data.tvqa_stage.STAGEQuestions`."""

    def __init__(self, dataset):
        if dataset.text is None:
            raise ValueError(f"{dataset.questions}: the split was read with check=False (no text reader); question "
                             f"prediction needs its token features (field: text)")
        self.dataset = dataset
        self.questions = [str(q) for q in dataset.table["question"]]
        self.first_answers = [str(c[0]) for c in dataset.table["candidates"]]
        self.qids = [str(q) for q in dataset.qids]
        self.groups = list(dataset.vid_names)
        self.max_len = int(dataset.limits.max_qa_l)
        if self.max_len < 2:
            raise ValueError(f"{dataset.questions}: max_qa_l {self.max_len} leaves no room for a question and the mask "
                             f"(field: max_qa_l)")

    def where(self, i: int) -> str:
        return self.dataset.where(i)

    def _question(self, j: int):
        """(token rows, words) of question ``j`` alone: the first rows of its first hypothesis."""
        text = self.dataset.text
        rows, words = text.hypothesis(self.qids[j], self.questions[j], self.first_answers[j], 0, self.where(j))
        n = min(len(text.words(self.questions[j])), self.max_len - 1)
        return rows[:n], words[:n]

    def rebuild(self, item: dict, chosen: Sequence[int], target: int) -> dict:
        text = self.dataset.text
        pieces = [self._question(j) for j in chosen]
        L = max(len(w) for _, w in pieces) + 1
        E = item["qas_bert"].shape[-1]
        C = len(chosen)
        qas_bert = torch.zeros((C, L, E), dtype=item["qas_bert"].dtype)
        qas_mask = torch.zeros((C, L), dtype=item["qas_mask"].dtype)
        qas = torch.zeros((C, L), dtype=item["qas"].dtype)
        mask_id = int(getattr(text, "unk", 1))
        for k, (rows, words) in enumerate(pieces):
            n = len(words)
            if rows.shape[1:] != (E,):
                raise ValueError(f"{self.where(chosen[k])}: question features of shape {tuple(rows.shape)}, the clip's "
                                 f"are {E}-d (field: qas_bert)")
            qas_bert[k, :n] = torch.from_numpy(np.asarray(rows, dtype=np.float32))
            qas_mask[k, :n + 1] = 1                       # the mask cell is on: a zero token, not padding
            qas[k, :n] = torch.as_tensor(text.word_ids(words), dtype=qas.dtype)
            qas[k, n] = mask_id
        old = item["att_labels"]                          # (T, L_old, R): rows of the ground truth's words
        att = old.new_zeros((old.shape[0], L, old.shape[2]))
        own = min(len(pieces[target][1]), old.shape[1])
        att[:, :own] = old[:, :own]
        return dict(item, qas_bert=qas_bert, qas_mask=qas_mask, qas=qas, att_labels=att, answer=int(target))


class _WordIdHypotheses:
    """"question_k <mask>" as DramaQA's word ids ``qas`` / ``qas_lengths`` over a
    :class:`~sparc.data.dramaqa_features.DramaQAFeatures`."""

    def __init__(self, dataset):
        vocabulary = dataset.vocabulary
        if MASK not in vocabulary.index:
            raise ValueError(f"{dataset.split_file}: the vocabulary has no {MASK!r} word for the masked answer; "
                             f"build it with sparc.data.question_prediction.with_mask_word (field: vocabulary)")
        self.dataset, self.vocabulary = dataset, vocabulary
        self.mask_id = int(vocabulary.index[MASK])
        self.questions = [str(q) for q in dataset.table["question"]]
        self.qids = [str(q) for q in dataset.table["qid"]]
        self.groups = [shots[0][:19] for shots in dataset.shots]   # the scene: AnotherMissOh{EE}_{SSS}
        self.max_len = int(dataset.max_words)
        if self.max_len < 2:
            raise ValueError(f"{dataset.split_file}: max_words {self.max_len} leaves no room for a question and the "
                             f"mask (field: max_words)")

    def where(self, i: int) -> str:
        return f"{self.dataset.split_file}, entry {i} (qid {self.qids[i]})"

    def rebuild(self, item: dict, chosen: Sequence[int], target: int) -> dict:
        rows = []
        for j in chosen:
            ids, length = self.vocabulary.encode(self.questions[j], self.max_len - 1)
            rows.append(list(ids[:length]) + [self.mask_id])
        width = max(len(r) for r in rows)
        qas = torch.zeros((len(rows), width), dtype=item["qas"].dtype)
        for k, r in enumerate(rows):
            qas[k, :len(r)] = torch.as_tensor(r, dtype=qas.dtype)
        lengths = torch.as_tensor([len(r) for r in rows], dtype=item["qas_lengths"].dtype)
        return dict(item, qas=qas, qas_lengths=lengths, answer=int(target))


def _hypotheses_for(dataset):
    from sparc.data.dramaqa_features import DramaQAFeatures
    from sparc.data.tvqa_stage import STAGEQuestions

    if isinstance(dataset, STAGEQuestions):
        return _STAGEHypotheses(dataset), ("qas_bert",)
    if isinstance(dataset, DramaQAFeatures):
        return _WordIdHypotheses(dataset), ("qas", "qas_lengths")
    raise TypeError(f"question prediction rebuilds the items of STAGEQuestions (TVQA, TVQA+) and DramaQAFeatures "
                    f"(DramaQA); got {type(dataset).__name__}")


# --------------------------------------------------------------------------- the dataset


class QuestionPrediction(torch.utils.data.Dataset):
    """The question-prediction view of a reader's split (module docstring): the reader's fields, with
    the hypotheses "question_k + [MASK]" and ``answer`` the own question's position. ``seed``: the
    draws' seed; ``num_candidates``: C, the reader's candidate count."""

    def __init__(self, dataset, seed: int = 0, num_candidates: int = 5):
        if num_candidates < 2:
            raise ValueError(f"num_candidates {num_candidates}: one question and at least one negative (field: "
                             f"num_candidates)")
        self.dataset, self.seed, self.num_candidates = dataset, int(seed), int(num_candidates)
        self.hypotheses, self._fields = _hypotheses_for(dataset)
        h = self.hypotheses
        texts = [" ".join(words_of(q)) for q in h.questions]
        self.pool = question_pool(h.groups, texts)
        distinct = len(set(self.pool["text"].tolist()))
        if len(dataset) and distinct < self.num_candidates:
            raise ValueError(f"{h.where(0)}: the split has {distinct} distinct questions, question prediction needs "
                             f"{self.num_candidates} per clip (its own and {self.num_candidates - 1} negatives) "
                             f"(field: question)")
        # the clips whose negatives include their own clip's other questions (tiny splits only)
        self.fallback_items = int((self.pool["other"] < self.num_candidates - 1).sum())
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def candidates(self, i: int) -> Tuple[List[int], int]:
        """(the candidates' item indices, the target position) of item ``i`` this epoch."""
        try:
            chosen, target, _ = draw_candidates(self.pool, int(i), self.num_candidates, self.seed, self.epoch)
        except ValueError as e:
            raise ValueError(f"{self.hypotheses.where(int(i))}: {e} (field: question)") from None
        return chosen, target

    def question_ids(self, i: int) -> List[str]:
        """The qids of item ``i``'s candidate questions, in candidate order."""
        return [self.hypotheses.qids[j] for j in self.candidates(i)[0]]

    def __getitem__(self, i: int) -> dict:
        i = int(i)
        item = self.dataset[i]
        for name in self._fields:
            if name not in item or int(item[name].shape[0]) != self.num_candidates:
                got = tuple(item[name].shape) if name in item else "no such field"
                raise ValueError(f"{self.hypotheses.where(i)}: the reader's {name} is {got}, question prediction "
                                 f"builds {self.num_candidates} candidates (field: {name})")
        chosen, target = self.candidates(i)
        return self.hypotheses.rebuild(item, chosen, target)

    def summary(self) -> dict:
        """What results.json records about the transform."""
        return {"candidates": self.num_candidates, "seed": self.seed, "questions": len(self),
                "fallback_items": self.fallback_items,
                "negatives": "questions of other clips (DramaQA: other scenes), distinct texts, never the clip's own",
                "mask": ("the vocabulary word <mask>" if self._fields[0] == "qas" else
                         "the zero feature vector, its mask on (qas: the unknown word's id)")}

