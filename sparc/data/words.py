"""Word-level text for the backbones that embed words themselves (memory-attention and HGA on
TGIF-QA, MSVD-QA, MSRVTT-QA, AGQA, DramaQA): no released token features exist for these benchmarks,
so questions and candidates become word ids over a vocabulary built from the training split, as
the benchmarks' own baselines do (Xu et al.'s ``preprocess_*.py``, HME's ``build_vocab``).

- Tokens: lower-cased runs of letters, digits and apostrophes; punctuation is dropped.
- Ids: 0 is padding, 1 an unknown word; the rest in order of first appearance in the texts given,
  so one training split always gives the same vocabulary (a resumed run rebuilds it identically).
- :func:`glove_matrix` fills an embedding matrix from a local GloVe text file (the baselines'
  300-d GloVe) for :class:`~sparc.adapters.MemoryAttention`'s ``glove_embed``; words GloVe lacks
  keep a seeded normal initialisation.
"""

from __future__ import annotations

import json
import os
import re
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

PathLike = Union[str, os.PathLike]
PAD, UNK = "<pad>", "<unk>"
_TOKEN = re.compile(r"[a-z0-9']+")


def words_of(text: str) -> List[str]:
    """The tokens of ``text``: lower-cased runs of letters, digits and apostrophes."""
    return _TOKEN.findall(str(text).lower())


class WordVocabulary:
    """Words to ids (``PAD`` 0, ``UNK`` 1). ``encode`` gives a fixed-width id row and its length."""

    def __init__(self, words: Sequence[str]):
        if list(words[:2]) != [PAD, UNK]:
            raise ValueError(f"a vocabulary starts with {PAD!r}, {UNK!r}; got {list(words[:2])}")
        self.words = list(words)
        self.index: Dict[str, int] = {w: i for i, w in enumerate(self.words)}
        if len(self.index) != len(self.words):
            raise ValueError("a vocabulary lists each word once")

    @classmethod
    def build(cls, texts: Iterable[str], min_count: int = 1) -> "WordVocabulary":
        """Every word of ``texts`` seen at least ``min_count`` times, in order of first appearance."""
        counts: Dict[str, int] = {}
        for text in texts:
            for w in words_of(text):
                counts[w] = counts.get(w, 0) + 1
        return cls([PAD, UNK] + [w for w, c in counts.items() if c >= min_count and w not in (PAD, UNK)])

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, text: str, max_len: int) -> Tuple[np.ndarray, int]:
        """``(ids (max_len,) int64, length)``: the first ``max_len`` words, unknown ones as ``UNK``,
        zero-padded. An empty text keeps length 1 (one ``UNK``): every encoder needs a word to read."""
        ids = [self.index.get(w, 1) for w in words_of(text)][:max_len] or [1]
        row = np.zeros(max_len, dtype=np.int64)
        row[:len(ids)] = ids
        return row, len(ids)

    def save(self, path: PathLike) -> None:
        with open(path, "w") as f:
            json.dump(self.words, f)

    @classmethod
    def load(cls, path: PathLike) -> "WordVocabulary":
        with open(path) as f:
            return cls(json.load(f))


def answer_index(answers: Sequence[str]) -> Dict[str, int]:
    """``{answer: class}`` of an open-ended answer set; look answers up with ``.get(a, -1)``: -1 marks
    a question whose answer is outside the set (it can never be predicted, so it counts as wrong)."""
    index = {}
    for i, a in enumerate(answers):
        if a in index:
            raise ValueError(f"answer {a!r} is listed twice in the answer set")
        index[a] = i
    return index


def glove_matrix(vocabulary: WordVocabulary, glove_txt: PathLike, dim: int = 300, seed: int = 0,
                 limit: Optional[int] = None) -> Tuple[np.ndarray, int]:
    """``(matrix (len(vocabulary), dim) float32, words found)`` from a GloVe text file (``word v1 ..
    v_dim`` per line). Padding is the zero vector; other words GloVe lacks keep N(0, 0.3²) draws."""
    matrix = np.random.default_rng(seed).normal(0.0, 0.3, (len(vocabulary), dim)).astype(np.float32)
    matrix[0] = 0.0
    found = 0
    with open(glove_txt, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if limit is not None and n > limit:
                break
            word, _, rest = line.rstrip("\n").partition(" ")
            i = vocabulary.index.get(word)
            if i is None or i == 0:
                continue
            values = rest.split(" ")
            if len(values) != dim:
                raise ValueError(f"{glove_txt}, line {n}: {len(values)} values for {word!r}, expected {dim}")
            matrix[i] = np.asarray(values, dtype=np.float32)
            found += 1
    return matrix, found


__all__ = ["WordVocabulary", "words_of", "answer_index", "glove_matrix", "PAD", "UNK"]
