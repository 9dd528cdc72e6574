"""The teacher pipeline end to end, as a user runs it: fine-tune ALBEF on the dataset's frames, extract
priors with the fine-tuned weights, train a video-QA model with SpARC's techniques on those priors."""

import numpy as np
import torch

import sparc
from sparc.adapters import HGAAdapter
from sparc.adapters.hga import HGA, EncoderQns, EncoderVidHGA
from sparc.cli import main
from sparc.data.questions import read_questions
from sparc.priors import PriorStore
from sparc.teachers.tiny import write_tiny_teacher_workspace
from sparc.train import TrainConfig, train

T, C, L, D = 4, 5, 3, 8


class FeatureQA(torch.utils.data.Dataset):
    """The workspace's questions with random backbone features (what a feature extractor would give)."""

    def __init__(self, questions):
        g = torch.Generator().manual_seed(0)
        self.qids = [q.qid for q in questions]
        self.answer = torch.tensor([q.answer_index for q in questions])
        self.vid = torch.randn(len(questions), T, D, generator=g)
        self.qas = torch.randn(len(questions), C, L, 768, generator=g) * 0.5

    def __len__(self):
        return len(self.qids)

    def __getitem__(self, i):
        return i

    def collate(self, idx):
        idx = torch.tensor(idx)
        return {"index": idx, "qid": [self.qids[i] for i in idx.tolist()], "vid_feats": self.vid[idx],
                "qas": self.qas[idx], "qas_lengths": torch.full((len(idx), C), L), "answer": self.answer[idx]}


def test_finetune_extract_train(tmp_path, capsys):
    ws = write_tiny_teacher_workspace(tmp_path / "ws", num_videos=4, questions_per_video=3, checkpoint=True)
    common = ["--questions", str(ws["questions"]), "--frames", str(ws["frames"]), "--num-frames", str(T),
              "--tokenizer", str(ws["vocab"]), "--teacher-config", str(ws["config"]), "--num-workers", "0"]
    assert main(["teacher-finetune", *common, "--checkpoint", str(ws["checkpoint"]), "--output-dir",
                 str(tmp_path / "ft"), "--epochs", "1", "--batch-size", "8", "--no-progress"]) == 0
    finetuned = tmp_path / "ft" / "albef-finetuned.safetensors"
    assert main(["extract-priors", *common, "--checkpoint", str(finetuned), "--out", str(tmp_path / "priors"),
                 "--no-progress"]) == 0
    store = PriorStore.open(tmp_path / "priors")
    # the fine-tuned teacher's priors differ from the original teacher's
    assert main(["extract-priors", *common, "--checkpoint", str(ws["checkpoint"]), "--out", str(tmp_path / "orig"),
                 "--no-progress"]) == 0
    qids = list(store.qids)
    assert not np.allclose(store.lookup(qids).numpy(), PriorStore.open(tmp_path / "orig").lookup(qids).numpy())

    data = FeatureQA(read_questions(ws["questions"]))
    torch.manual_seed(0)
    vid = EncoderVidHGA(dim_vid=D, dim_hidden=8, input_dropout_p=0.0)
    qns = EncoderQns(dim_embed=8, dim_hidden=8, vocab_size=1, glove_embed=None, use_bert=True, input_dropout_p=0.0)
    model = sparc.wrap(HGA(vid, qns, block_kwargs={"mm_dim": 8, "chunks": 2, "rank": 2}), HGAAdapter(),
                       [sparc.TemporalGuidance(), sparc.SpatialDistillation()])
    result = train(model, data, data.collate, TrainConfig(epochs=2, batch_size=6, lr=1e-2, progress=False,
                                                          log_with=None), priors=store)
    assert result.global_step == 4 and all(np.isfinite(result.losses))
    # both techniques read the store: their terms are in every step's loss
    assert len(result.terms) == 4
    assert all({"guided", "spatial"} <= set(k.split("/")[-1] for k in terms) for terms in result.terms), result.terms[0]
