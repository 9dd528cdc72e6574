"""Question prediction (paper 002 3.2): the draws on hand-made clips (the own question at the target,
negatives from other clips with other texts, never its own, deterministic per seed and epoch), the
transform over DramaQA's word ids and STAGE's token features (the answer masked, the rest of the item
the reader's), its errors, and the TVQA recipe's pretraining -> main stage (the main stage starts from
the pretrained weights; a killed main stage resumes from its checkpoint without pretraining again)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sparc.data.question_prediction import MASK, QuestionPrediction, draw_candidates, question_pool, with_mask_word

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
sys.path.insert(0, str(RECIPES))
import tvqaplus  # noqa: E402  (recipes/tvqaplus.py: the STAGE readers, smoke data and model)

# ---- the draws -------------------------------------------------------------------------------------

# 5 clips of 3 questions each, every text distinct
GROUPS = [f"clip{g}" for g in range(5) for _ in range(3)]
TEXTS = [f"question {n}" for n in range(15)]


def test_the_own_question_sits_at_the_target_among_other_clips_questions():
    pool = question_pool(GROUPS, TEXTS)
    targets = []
    for seed in (0, 1, 2):
        for i in range(len(GROUPS)):
            chosen, target, fallback = draw_candidates(pool, i, 5, seed)
            assert len(chosen) == 5 and chosen[target] == i and not fallback
            negatives = chosen[:target] + chosen[target + 1:]
            assert i not in negatives
            assert all(GROUPS[j] != GROUPS[i] for j in negatives)          # never the own clip
            assert len({TEXTS[j] for j in chosen}) == 5                   # distinct texts
            assert draw_candidates(pool, i, 5, seed) == (chosen, target, fallback)   # the same draw again
            targets.append(target)
    assert set(targets) == set(range(5))                                  # every position is used
    epochs = [draw_candidates(pool, i, 5, 0, epoch=e)[:2] for e in (0, 1) for i in range(15)]
    assert epochs[:15] != epochs[15:]                                     # a new epoch, new draws
    assert [draw_candidates(pool, i, 5, 0, epoch=1)[:2] for i in range(15)] == epochs[15:]


def test_a_negative_never_repeats_the_own_text_and_a_tiny_split_falls_back_to_the_own_clip():
    groups = ["a", "a", "b", "b", "c", "d"]
    texts = ["who", "why", "how", "where", "who", "when"]       # "who" in clips a and c
    pool = question_pool(groups, texts)
    assert pool["other"].tolist() == [3, 4, 3, 3, 4, 4]         # distinct texts of other clips, the own text not counted
    for seed in range(10):
        # c's "who" (item 4): negatives why (clip a), how, where (b), when (d); a's "who" (item 0) never
        chosen, target, fallback = draw_candidates(pool, 4, 5, seed)
        assert not fallback and chosen[target] == 4 and sorted(chosen) == [1, 2, 3, 4, 5]
        # a's "who": the other clips hold only how, where, when (c's "who" is its own text), so its own
        # clip's "why" fills in, never item 0 itself
        chosen, target, fallback = draw_candidates(pool, 0, 5, seed)
        assert fallback and sorted(chosen) == [0, 1, 2, 3, 5] and chosen[target] == 0

    tiny = question_pool(["x"] * 7 + ["y"], [f"q{n}" for n in range(8)])  # TVQA+'s smoke split: 7 + 1
    for i in range(7):
        chosen, target, fallback = draw_candidates(tiny, i, 5, 3)
        assert fallback and chosen[target] == i and 7 in chosen and chosen.count(i) == 1


# ---- DramaQA: word ids -----------------------------------------------------------------------------


def _dramaqa(root: Path):
    """7 questions over 4 scenes: scene 01_001 a shot question and a scene question (shots 1-2), the
    same words ("Who is Haeyoung?") asked in scenes 01_001 and 02_001."""
    import h5py

    shots = ["AnotherMissOh01_001_0001", "AnotherMissOh01_001_0002", "AnotherMissOh01_002_0001",
             "AnotherMissOh02_001_0001", "AnotherMissOh02_002_0001"]
    with h5py.File(root / "features.h5", "w") as f:
        for n, shot in enumerate(shots):
            f[shot] = np.full((3, 4), float(n), dtype=np.float32)
    rows = [("AnotherMissOh01_001_0001", [1], "Who is Haeyoung?"), ("AnotherMissOh01_001_0000", [1, 2], "Why is Dokyung sad?"),
            ("AnotherMissOh01_002_0001", [1], "What does Deogi cook?"), ("AnotherMissOh01_002_0001", [1], "Where is the cafe?"),
            ("AnotherMissOh02_001_0001", [1], "who is haeyoung"), ("AnotherMissOh02_001_0001", [1], "How did Jinsang leave?"),
            ("AnotherMissOh02_002_0001", [1], "When does Hun arrive?")]
    entries = [{"qid": 100 + n, "que": q, "answers": [f"answer {k} of {n}" for k in range(5)], "correct_idx": n % 5,
                "q_level_logic": 3 if vid.endswith("0000") else 1, "q_level_mem": 1, "vid": vid, "shot_contained": shots_in}
               for n, (vid, shots_in, q) in enumerate(rows)]
    path = root / "split.json"
    path.write_text(json.dumps(entries))
    return path


def test_dramaqa_hypotheses_are_questions_and_the_mask_word(tmp_path):
    from sparc.data.dramaqa_features import DramaQAFeatures, texts
    from sparc.data.dramaqa import read_dramaqa_table
    from sparc.data.words import WordVocabulary

    split = _dramaqa(tmp_path)
    plain = WordVocabulary.build(texts(read_dramaqa_table(split)))
    vocab = with_mask_word(plain)
    assert vocab.words[:-1] == plain.words and vocab.words[-1] == MASK and with_mask_word(vocab) is vocab
    reader = DramaQAFeatures(split, tmp_path / "features.h5", vocab, num_frames=4, max_words=5)
    qp = QuestionPrediction(reader, seed=7)
    scene = ["01_001", "01_001", "01_002", "01_002", "02_001", "02_001", "02_002"]
    for i in range(len(reader)):
        item, original = qp[i], reader[i]
        chosen, target = qp.candidates(i)
        assert item["answer"] == target and chosen[target] == i
        assert all(scene[j] != scene[i] for j in chosen if j != i)      # the shot and scene questions of 01_001 too
        assert not (i in (0, 4) and {0, 4} <= set(chosen))             # the same words never against each other
        for k, j in enumerate(chosen):
            ids, n = vocab.encode(reader.table[j]["question"], 4)
            assert item["qas"][k, :n + 1].tolist() == ids[:n].tolist() + [vocab.index[MASK]]
            assert item["qas_lengths"][k] == n + 1 and not item["qas"][k, n + 1:].any()
        assert torch.equal(item["vid_feats"], original["vid_feats"]) and item["qid"] == original["qid"]
    assert qp.question_ids(1)[qp.candidates(1)[1]] == "101"
    # "What does Deogi cook?" -> 4 words; max_words 5 keeps 4 and the mask
    assert qp[2]["qas_lengths"][qp.candidates(2)[1]] == 5

    with pytest.raises(ValueError, match=r"no '<mask>' word .*field: vocabulary"):
        QuestionPrediction(DramaQAFeatures(split, tmp_path / "features.h5", plain))
    with pytest.raises(TypeError, match="STAGEQuestions .* DramaQAFeatures"):
        QuestionPrediction([1, 2, 3])
    few = json.loads(split.read_text())[:4]                            # 4 distinct questions for 5 candidates
    (tmp_path / "few.json").write_text(json.dumps(few))
    with pytest.raises(ValueError, match=r"qid 100\).*4 distinct questions.*field: question"):
        QuestionPrediction(DramaQAFeatures(tmp_path / "few.json", tmp_path / "features.h5", vocab))


# ---- STAGE: token features ---------------------------------------------------------------------------


def test_stage_hypotheses_are_question_token_features_and_a_zero_mask_vector(tmp_path):
    import h5py

    data = tvqaplus.write_smoke_data(tmp_path / "data")
    config = json.loads((RECIPES / "tvqaplus_stage.json").read_text())
    reader = tvqaplus.plus_split(data, "train", config, tmp_path)
    qp = QuestionPrediction(reader, seed=0)
    assert qp.fallback_items == 7                      # its 8 questions: 7 of one clip, 1 of another
    word2idx = json.loads((data / "tvqa_plus_stage_features" / "word2idx.json").read_text())
    with h5py.File(data / "tvqa_plus_stage_features" / "bbt_qa_s_tokenized_bert_sub_qa_tuned_new_qid.h5") as qa:
        for i in (0, 7):
            item, original = qp[i], reader[i]
            chosen, target = qp.candidates(i)
            assert item["answer"] == target and chosen[target] == i and i not in chosen[:target] + chosen[target + 1:]
            for k, j in enumerate(chosen):
                rows = qa[f"{reader.qids[j]}_q"][()]
                n = len(rows)
                assert torch.equal(item["qas_bert"][k, :n], torch.from_numpy(rows))
                assert not item["qas_bert"][k, n].any() and item["qas_mask"][k, :n + 1].eq(1).all()   # the mask cell
                assert not item["qas_mask"][k, n + 1:].any()
                words = reader.table[j]["question"].split()
                assert item["qas"][k, :n].tolist() == [word2idx.get(w.lower(), 1) for w in words]
                assert int(item["qas"][k, n]) == word2idx["<unk>"]
            own = len(reader.table[i]["question"].split())
            # the own question's words keep their attention labels, the answer words' rows are gone
            assert torch.equal(item["att_labels"][:, :own], original["att_labels"][:, :own])
            assert not item["att_labels"][:, own:].any()
            for name in ("vid", "vid_mask", "sub_bert", "sub_mask", "frame_ids", "ts_label_mask"):
                assert torch.equal(item[name], original[name])
            assert (item["ts_label_st"], item["ts_label_ed"], item["qid"]) == (original["ts_label_st"],
                                                                             original["ts_label_ed"], original["qid"])
    assert bool(qp[0]["att_labels"].gt(0).any())       # question 127586 has labelled question words
    qp.set_epoch(1)
    assert [qp.candidates(i) for i in range(8)] != [QuestionPrediction(reader, seed=0).candidates(i) for i in range(8)]


# ---- the TVQA recipe: pretraining, then the main stage ----------------------------------------------


def _run(*args):
    subprocess.run([sys.executable, str(RECIPES / "tvqa.py"), "--smoke", *args], check=True, timeout=300,
                   capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_tvqa_pretrains_then_starts_the_main_stage_from_it_and_resumes_without_pretraining_again(tmp_path):
    from sparc.pretraining import weights_digest

    out = tmp_path / "run"
    _run("--output", str(out), "--max-steps", "3")          # killed in the main stage's second epoch
    first = json.loads((out / "results.json").read_text())
    pre, start = first["pretraining"], first["main_stage_start"]
    assert (pre["epochs"], pre["lr"], pre["steps"]) == (1, 1e-5, 2)      # 16 questions / batch 8
    assert pre["final_loss"] > 0 and pre["eval"]["num_examples"] == 16 and pre["transform"]["candidates"] == 5
    weights = torch.load(out / "pretrain" / "weights.pt", weights_only=True)
    assert weights_digest(weights) == pre["weights_digest"] == start["initial_weights_digest"]
    config = json.loads((RECIPES / "tvqa_stage.json").read_text())
    fresh = tvqaplus.build_stage(dict(config["model"], hsz=16, dropout=0.0), seed=0).state_dict()
    assert weights.keys() == fresh.keys() and weights_digest(fresh) != pre["weights_digest"]   # pretraining moved them
    assert first["global_step"] == 3 and "resumed_from" not in start

    stamps = {p: p.stat().st_mtime_ns for p in (out / "pretrain").rglob("*")}
    _run("--output", str(out))
    resumed = json.loads((out / "results.json").read_text())
    assert {p: p.stat().st_mtime_ns for p in (out / "pretrain").rglob("*")} == stamps   # nothing pretrained again
    assert resumed["pretraining"]["reused"] and resumed["pretraining"]["weights_digest"] == pre["weights_digest"]
    assert resumed["main_stage_start"]["resumed_from"].endswith("step-00000002")
    assert resumed["main_stage_start"]["initial_weights_digest"] == pre["weights_digest"]
    assert resumed["global_step"] == 4 and list(resumed["metrics"]) == ["qa_acc"]


def test_pretrain_epochs_zero_skips_the_stage(tmp_path):
    from sparc.pretraining import Pretraining, pretrain, start_main_stage

    stage = pretrain(tmp_path, None, None, None, None, None, epochs=0, lr=1e-5)
    assert stage.weights is None and stage.summary["epochs"] == 0 and not (tmp_path / "pretrain").exists()
    model = torch.nn.Linear(2, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    record = start_main_stage(tmp_path, model, stage)
    assert record["from"] == "initialisation" and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match=r"(?s)do not fit the main stage.s model.*field: weights"):
        start_main_stage(tmp_path, model, Pretraining({}, {"weight": torch.zeros(3, 3)}))
