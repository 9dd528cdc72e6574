"""sparc.data.words: the train-split word vocabulary, the open-ended answer index, GloVe rows."""

import numpy as np
import pytest

from sparc.data.words import PAD, UNK, WordVocabulary, answer_index, glove_matrix, words_of


def test_words_are_lowercased_runs_without_punctuation():
    assert words_of("What is the man's dog doing? (Running, 2x!)") == ["what", "is", "the", "man's", "dog", "doing",
                                                                         "running", "2x"]


def test_vocabulary_in_first_appearance_order_with_min_count():
    v = WordVocabulary.build(["a b c", "b c d", "c"], min_count=2)
    assert v.words == [PAD, UNK, "b", "c"]
    ids, length = v.encode("C a b c b", max_len=4)
    assert ids.tolist() == [3, 1, 2, 3] and length == 4                      # truncated to 4, "a" unknown
    ids, length = v.encode("b", max_len=3)
    assert ids.tolist() == [2, 0, 0] and length == 1                         # zero-padded
    ids, length = v.encode("?!", max_len=3)
    assert ids.tolist() == [1, 0, 0] and length == 1                         # an empty text is one UNK


def test_vocabulary_round_trips_and_refuses_a_wrong_file(tmp_path):
    v = WordVocabulary.build(["one two", "three"])
    v.save(tmp_path / "v.json")
    assert WordVocabulary.load(tmp_path / "v.json").words == v.words
    with pytest.raises(ValueError, match="starts with"):
        WordVocabulary(["one", "two"])
    with pytest.raises(ValueError, match="once"):
        WordVocabulary([PAD, UNK, "x", "x"])


def test_answer_index_and_out_of_set():
    index = answer_index(["yes", "no", "man"])
    assert index == {"yes": 0, "no": 1, "man": 2} and index.get("dog", -1) == -1
    with pytest.raises(ValueError, match="twice"):
        answer_index(["yes", "yes"])


def test_glove_rows_fill_known_words_only(tmp_path):
    v = WordVocabulary.build(["cat dog"])
    (tmp_path / "g.txt").write_text("dog 1 2 3\nbird 4 5 6\ncat 7 8 9\n")
    matrix, found = glove_matrix(v, tmp_path / "g.txt", dim=3)
    assert found == 2 and matrix.dtype == np.float32
    assert matrix[0].tolist() == [0, 0, 0] and matrix[2].tolist() == [7, 8, 9] and matrix[3].tolist() == [1, 2, 3]
    assert not np.allclose(matrix[1], 0)                                     # UNK keeps its random row
    (tmp_path / "bad.txt").write_text("cat 1 2\n")
    with pytest.raises(ValueError, match=r"bad.txt, line 1: 2 values for 'cat', expected 3"):
        glove_matrix(v, tmp_path / "bad.txt", dim=3)
