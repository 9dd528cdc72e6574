"""The NExT-QA reader on the real val annotations (every row kept, counts checked) and on features
written here in the released layout (app_mot_{split}.h5 keyed by video, bert_ft_{split}.h5 by CSV row)."""

import collections
from pathlib import Path

import numpy as np
import pytest
import torch

h5py = pytest.importorskip("h5py")

import sparc  # noqa: E402
from sparc.adapters import HGAAdapter  # noqa: E402
from sparc.adapters.hga import HGA, EncoderQns, EncoderVidHGA  # noqa: E402
from sparc.contract import causal_priors  # noqa: E402
from sparc.data.nextqa import NExTQA, candidate_lengths, collate_nextqa, read_nextqa_table  # noqa: E402

VAL = Path(__file__).parent / "fixtures" / "annotations" / "nextqa" / "val.csv"
VAL_TYPES = {"CW": 1924, "CH": 683, "TN": 895, "TC": 663, "TP": 54, "DC": 177, "DL": 295, "DO": 305}


def test_the_whole_val_split_is_read_in_file_order(tmp_path):
    table = read_nextqa_table(VAL, cache_dir=tmp_path)
    assert len(table) == 4996 and len(set(table["video"])) == 570
    assert collections.Counter(table["type"]) == VAL_TYPES
    assert collections.Counter(table["answer"]) == {0: 1013, 1: 1013, 2: 991, 3: 967, 4: 1012}
    assert table["key"][:2] == ["4010069381_6", "4882821564_1"] and table["row"][-1] == 4995
    assert table[1]["a2"] == "unwrap it"


def write_split(tmp_path, rows=12, seed=0):
    """The first ``rows`` val questions with features in the released layout: float32, video ids as
    integers, 37 BERT token rows per candidate zero-padded after 20-37 real ones."""
    lines = VAL.read_text().splitlines()
    csv_path = tmp_path / "val.csv"
    csv_path.write_text("\n".join(lines[:rows + 1]) + "\n")
    table = read_nextqa_table(csv_path, cache_dir=tmp_path / "cache")
    videos = sorted(set(table["video"]), reverse=True)           # not the CSV's order
    g = np.random.default_rng(seed)
    with h5py.File(tmp_path / "app_mot_val.h5", "w") as f:
        f["ids"] = np.array([int(v) for v in videos])
        f["feat"] = g.standard_normal((len(videos), 16, 4096), dtype=np.float32)
    lengths = g.integers(20, 38, size=(rows, 5))
    qas = g.standard_normal((rows, 5, 37, 768), dtype=np.float32)
    qas[np.arange(37)[None, None, :] >= lengths[..., None]] = 0.0
    qas[0, 1, 5] = 0.0
    qas[0, 1, 5, :2] = [1.5, -1.5]                                   # a real row summing to exactly 0
    with h5py.File(tmp_path / "bert_ft_val.h5", "w") as f:
        f["feat"] = qas
    return csv_path, videos, lengths, qas


def test_items_follow_the_released_layout(tmp_path):
    csv_path, videos, lengths, qas = write_split(tmp_path)
    data = NExTQA(csv_path, tmp_path / "app_mot_val.h5", tmp_path / "bert_ft_val.h5", cache_dir=tmp_path / "cache")
    assert len(data) == 12
    item = data[3]
    assert item["qid"] == "2834146886_8" and item["answer"] == 2 and item["type"] == "TN"
    with h5py.File(tmp_path / "app_mot_val.h5") as f:
        expected = f["feat"][videos.index("2834146886")]
    assert torch.equal(item["vid_feats"], torch.from_numpy(expected))
    assert torch.equal(item["qas"], torch.from_numpy(qas[3]))          # by CSV row
    assert item["qas_lengths"].tolist() == lengths[3].tolist()
    # the original's nozero_row stops at the first row summing to 0, real or not
    assert data[0]["qas_lengths"][1] == 5 and candidate_lengths(qas[0])[1] == 5


def test_a_batch_trains_hga_through_its_adapter(tmp_path):
    csv_path, *_ = write_split(tmp_path)
    data = NExTQA(csv_path, tmp_path / "app_mot_val.h5", tmp_path / "bert_ft_val.h5", cache_dir=tmp_path / "cache")
    loader = torch.utils.data.DataLoader(data, batch_size=4, collate_fn=collate_nextqa)
    batch = next(iter(loader))
    assert batch["vid_feats"].shape == (4, 16, 4096) and batch["qas"].shape == (4, 5, 37, 768)
    torch.manual_seed(0)
    vid = EncoderVidHGA(dim_vid=4096, dim_hidden=8, input_dropout_p=0.0)
    qns = EncoderQns(dim_embed=8, dim_hidden=8, vocab_size=1, glove_embed=None, use_bert=True, input_dropout_p=0.0)
    model = HGA(vid, qns, block_kwargs={"mm_dim": 8, "chunks": 2, "rank": 2})
    wrapped = sparc.wrap(model, HGAAdapter(), [sparc.TemporalGuidance(), sparc.SpatialDistillation()])
    out = wrapped(batch, priors=causal_priors(4, 16, 5, batch["answer"]))
    assert torch.isfinite(out.loss) and set(out.terms) == {"guided", "consistency", "spatial"}
    out.loss.backward()


def test_bad_files_name_the_file_line_and_field(tmp_path):
    csv_path, videos, *_ = write_split(tmp_path)
    with h5py.File(tmp_path / "short.h5", "w") as f:                  # one video missing
        f["ids"] = np.array([int(v) for v in videos[1:]])
        f["feat"] = np.zeros((len(videos) - 1, 16, 4096), dtype=np.float32)
    missing = videos[0]
    with pytest.raises(ValueError, match=rf"val.csv, line \d+ \(qid {missing}_\d+\): video {missing} is not in .*short.h5 \(field: ids\)"):
        NExTQA(csv_path, tmp_path / "short.h5", cache_dir=tmp_path / "cache")
    with h5py.File(tmp_path / "text.h5", "w") as f:                   # one row short: filtered or reordered
        f["feat"] = np.zeros((11, 5, 37, 768), dtype=np.float32)
    with pytest.raises(ValueError, match=r"one \(5, L, 768\) entry per row .* \(12 rows\), in the CSV's order"):
        NExTQA(csv_path, text_features=tmp_path / "text.h5", cache_dir=tmp_path / "cache")
    lines = csv_path.read_text().splitlines()
    lines[3] = lines[3].replace(",CH,", ",XX,")
    (tmp_path / "bad.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"bad.csv, line 4 \(qid 2435100235_7\): unknown question type 'XX'.*\(field: type\)"):
        read_nextqa_table(tmp_path / "bad.csv", cache_dir=tmp_path / "cache")
