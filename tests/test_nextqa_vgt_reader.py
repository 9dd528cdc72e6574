"""NExT-QA in VGT's layout: region features with VGT's box features (from the CSV's width and
height), frame features, candidates tokenized as "question [SEP] answer" by a local BERT vocabulary;
a batch trains the reference VGT through its adapter."""

from pathlib import Path

import numpy as np
import pytest
import torch

h5py = pytest.importorskip("h5py")

import sparc  # noqa: E402
from sparc.adapters import VGTAdapter  # noqa: E402
from sparc.data.nextqa_vgt import NExTQAVGT, box_features, collate_nextqa_vgt  # noqa: E402

VAL = Path(__file__).parent / "fixtures" / "annotations" / "nextqa" / "val.csv"


def test_box_features_by_hand():
    got = box_features(np.array([[10.0, 20.0, 29.0, 59.0]]), 100.0, 200.0)
    assert np.allclose(got, [[0.1, 0.1, 0.29, 0.295, 20 * 40 / 20000]])


def tokenizer(tmp_path):
    from transformers import BertTokenizer

    words = sorted({w for line in VAL.read_text().splitlines()[1:13] for w in line.replace(",", " ").lower().split()})
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return BertTokenizer(str(tmp_path / "vocab.txt"))


def write_features(tmp_path, rows=12):
    lines = VAL.read_text().splitlines()
    (tmp_path / "val.csv").write_text("\n".join(lines[:rows + 1]) + "\n")
    videos = sorted({line.split(",")[0] for line in lines[1:rows + 1]})
    g = np.random.default_rng(0)
    boxes = np.sort(g.uniform(0, 300, size=(len(videos), 8, 4, 20, 4)), axis=-1)[..., [0, 2, 1, 3]]
    with h5py.File(tmp_path / "acregion_8c20b_val.h5", "w") as f:
        f["ids"] = np.array([int(v) for v in videos])
        f["feat"] = g.standard_normal((len(videos), 8, 4, 20, 2048), dtype=np.float32)
        f["bbox"] = boxes
    with h5py.File(tmp_path / "app_feat_val.h5", "w") as f:
        f["ids"] = np.array([int(v) for v in videos][::-1])                 # another order than the regions'
        f["resnet_features"] = g.standard_normal((len(videos), 8, 4, 2048), dtype=np.float32)
    return videos, boxes


def test_items_follow_vgts_layout(tmp_path):
    videos, boxes = write_features(tmp_path)
    data = NExTQAVGT(tmp_path / "val.csv", tmp_path / "acregion_8c20b_val.h5", tmp_path / "app_feat_val.h5",
                     tokenizer(tmp_path), cache_dir=tmp_path / "cache")
    item = data[0]                                                      # video 4010069381, 640 x 480
    assert item["question_id"] == "4010069381_6" and item["answer_id"] == 0
    assert item["video_o"].shape == (8, 4, 5, 2053) and item["video_f"].shape == (8, 4, 2048)
    expected = box_features(boxes[videos.index("4010069381")][:, :, :5], 640.0, 480.0)
    assert np.allclose(item["video_o"][..., 2048:].numpy(), expected, atol=1e-6)
    with h5py.File(tmp_path / "app_feat_val.h5") as f:
        order = [str(i) for i in f["ids"][()]]
        assert torch.equal(item["video_f"], torch.from_numpy(f["resnet_features"][order.index("4010069381")]))
    assert item["answer"][:, 0].eq(101).all() and (item["seq_len"] == item["answer"].shape[1]).all()


def test_a_batch_trains_vgt_through_its_adapter(tmp_path):
    write_features(tmp_path)
    tok = tokenizer(tmp_path)
    data = NExTQAVGT(tmp_path / "val.csv", tmp_path / "acregion_8c20b_val.h5", tmp_path / "app_feat_val.h5", tok,
                     cache_dir=tmp_path / "cache")
    batch = collate_nextqa_vgt([data[i] for i in range(4)])
    assert batch["answer"].shape[:2] == (4, 5)
    from sparc.adapters.vgt import VGT

    torch.manual_seed(0)
    bert = {"vocab_size": len(tok), "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 16, "max_position_embeddings": 64}
    model = VGT(bert_tokenizer=None, feature_dim=2048, N=1, h=2, d_model=16, d_ff=16, dropout=0.0, Q=0, T=8,
                vocab_size=len(tok), bnum=5, dataset="nextqa", bert_config=bert)
    wrapped = sparc.wrap(model, VGTAdapter(), [sparc.TemporalGuidance(), sparc.SpatialDistillation()])
    from sparc.contract import causal_priors

    priors = causal_priors(4, 8, 5, batch["answer_id"])
    out = wrapped(batch, priors=priors)
    assert torch.isfinite(out.loss)
    out.loss.backward()
