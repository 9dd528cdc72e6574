"""The synthetic benchmark for STAGE's techniques: the STAGE batch's span and attention labels against
the generator's true causal frames and evidence regions, the demo's rows named by --techniques /
--frames, and `sparc demo --backbone stage --quick --techniques ...` end to end."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from sparc.backbones.stage import stage_batch
from sparc.data.synthetic import QUESTION_LENGTH, SUBJECT_POSITION, SyntheticBenchmark, SyntheticConfig
from sparc.demo_rows import Row, technique_rows
from sparc.selection import STAGE_SPANS, SelectionInputs


@pytest.fixture(scope="module")
def bench():
    return SyntheticBenchmark(SyntheticConfig(sizes={"teacher": 8, "train": 64, "test": 8}))


def test_the_span_is_the_hull_of_the_true_causal_frames(bench):
    split = bench.splits["train"]
    batch = stage_batch(bench, [bench.dataset("train")[i] for i in range(len(split))])
    keep = STAGE_SPANS(SelectionInputs(batch, None, batch["answer"], batch["ts_label_mask"])).numpy()
    causal = split.causal
    assert (keep >= causal).all()                                  # every causal frame is in the span
    st, ed = batch["ts_label_st"].numpy(), batch["ts_label_ed"].numpy()
    rows = np.arange(len(split))
    assert causal[rows, st].all() and causal[rows, ed].all()       # and it starts and ends on one
    assert (keep.sum(1) == ed - st + 1).all() and (keep.sum(1) > causal.sum(1)).any()   # gaps are kept
    assert torch.equal(batch["anno_st_idx"], batch["ts_label_st"]) and not bool(batch["ts_missing"].any())
    # a hand-checked question: its causal frames, and its span from the first to the last of them
    i = int(np.nonzero(causal.sum(1) < keep.sum(1))[0][0])
    first, last = np.nonzero(causal[i])[0][[0, -1]]
    assert (st[i], ed[i]) == (first, last) and np.nonzero(keep[i])[0].tolist() == list(range(first, last + 1))


def test_attention_labels_point_at_the_asked_subject_doing_the_answer(bench):
    split = bench.splits["train"]
    batch = stage_batch(bench, [bench.dataset("train")[i] for i in range(len(split))])
    att = batch["att_labels"]
    B, T, L, R = att.shape
    assert (L, R) == (batch["qas_bert"].shape[2], batch["vid"].shape[2]) == (QUESTION_LENGTH + 2, 5)
    positive = att > 0
    # only the answer hypothesis' subject and action words carry labels, one region each per causal frame
    assert not bool(positive[:, :, [w for w in range(L) if w not in (SUBJECT_POSITION, QUESTION_LENGTH)]].any())
    for word in (SUBJECT_POSITION, QUESTION_LENGTH):
        assert torch.equal(positive[:, :, word].sum(-1), torch.from_numpy(split.causal).long())
        assert torch.equal(att[:, :, word][positive[:, :, word]], torch.ones(int(positive[:, :, word].sum())))
    answer_action = split.candidates[np.arange(B), split.answer]
    for b, t, r in torch.nonzero(positive[:, :, SUBJECT_POSITION]).tolist():
        # the labelled region shows the asked subject doing the answer (region p < 2 shows slot p) ...
        assert r < 2 and split.frame_subject[b, t, r] == split.asked[b] and split.frame_action[b, t, r] == answer_action[b]
        # ... and its feature is that pair's (the others in the frame match it less)
        expected = bench.region_subject_vectors[split.asked[b]] + bench.region_action_vectors[answer_action[b]]
        assert int(np.argmax(batch["vid"][b, t].numpy() @ expected)) == r
    # the hypothesis tokens at the labelled words are the asked subject and the answer
    tokens = batch["qas"][torch.arange(B), batch["answer"]]
    assert (tokens[:, SUBJECT_POSITION].numpy() == bench.token("subject0") + split.asked).all()
    assert (tokens[:, QUESTION_LENGTH].numpy() == bench.token("action0") + answer_action).all()


def test_stage_trains_with_its_span_and_attention_labels_on_the_synthetic_batch(bench):
    import sparc
    from sparc.backbones import BACKBONES

    spec = BACKBONES.get("stage", "demo")
    batch = spec.collate(bench, [bench.dataset("train")[i] for i in range(6)])
    torch.manual_seed(0)
    model = sparc.wrap(spec.build(bench, 16), spec.adapter(), [sparc.SpanSupervision(), sparc.AttentionSupervision()])
    out = model(batch)
    out.loss.backward()
    assert set(out.terms) == {"answer", "span", "attention"}
    assert all(bool(torch.isfinite(v)) and float(v.detach()) > 0 for v in out.terms.values())


def test_rows_are_added_one_at_a_time_and_frames_retrain_the_first_row_that_reads_them():
    rows = technique_rows("sparc,span,attention,contrastive", ["teacher", "gt", "teacher&gt", "teacher|gt"])
    sparc_pair = (("T", {}), ("S", {}))
    assert rows == (Row("+sparc", sparc_pair),
                    Row("+sparc+span", sparc_pair + (("span", {}),)),
                    Row("+sparc+span+attention", sparc_pair + (("span", {}), ("attention", {}))),
                    Row("+sparc+span+attention+contrastive",
                        sparc_pair + (("span", {}), ("attention", {}), ("contrastive", {}))),
                    Row("+sparc [gt]", sparc_pair, "gt"), Row("+sparc [teacher&gt]", sparc_pair, "teacher&gt"),
                    Row("+sparc [teacher|gt]", sparc_pair, "teacher|gt"))
    # span supervision reads no causal frames: the first row that does is +span+T
    assert technique_rows("span,T", ["gt"])[-1] == Row("+span+T [gt]", (("span", {}), ("T", {})), "gt")
    for spec, frames, message in [("sparc,spam", (), r"unknown technique 'spam'; choose from sparc, T, S"),
                                  ("S,S", (), r"names a technique twice"),
                                  ("span,attention", ("gt",), r"--frames gt: none of the rows .* reads causal frames"),
                                  ("sparc", ("both",), r"--frames: unknown choice 'both'")]:
        with pytest.raises(ValueError, match=message):
            technique_rows(spec, frames)


def test_demo_settings_from_techniques_and_a_row_that_cannot_train_fails_first(bench):
    from sparc.demo import DemoSettings, check_rows, run_cost

    settings = DemoSettings.make(False, "stage", techniques="sparc,span", frames=("gt",))
    assert settings.configs == ("plain", "+sparc", "+sparc+span", "+sparc [gt]") and settings.seeds == (0, 1)
    assert run_cost("+sparc+span", settings) > run_cost("+sparc", settings) == run_cost("+T+S")
    both = DemoSettings.make(False, "stage", configs=["+T"], techniques="sparc")
    assert both.configs == ("plain", "+T", "+sparc")
    with pytest.raises(ValueError, match=r"--frames retrains a row of --techniques"):
        DemoSettings.make(False, "stage", frames=("gt",))
    hga = DemoSettings.make(False, "hga", techniques="sparc,span")
    with pytest.raises(ValueError, match=r"demo row '\+sparc\+span' cannot train HGA: SpanSupervision supervises "
                                         r"the model's span_logits, which HGAAdapter does not return"):
        check_rows(hga, bench, hga.configs[1:])


def test_sparc_demo_stage_quick_with_techniques_and_frames(tmp_path):
    out = tmp_path / "demo"
    subprocess.run([sys.executable, "-m", "sparc", "demo", "--backbone", "stage", "--quick", "--output-dir", str(out),
                    "--techniques", "sparc,span,attention,contrastive", "--frames", "gt", "teacher|gt"],
                   check=True, timeout=300, capture_output=True, env={**os.environ, "SPARC_DEMO_TINY": "1"})
    results = json.loads((out / "results.json").read_text())
    assert list(results["accuracy"]) == ["plain", "+sparc", "+sparc+span", "+sparc+span+attention",
                                         "+sparc+span+attention+contrastive", "+sparc [gt]", "+sparc [teacher|gt]"]
    assert all(0.0 <= row["mean"] <= 100.0 for row in results["accuracy"].values())
    assert set(results["runs"]["+sparc+span+attention+contrastive"][0]) >= {"accuracy", "curve", "final_loss", "span_iou"}
    for row in results["accuracy"].values():
        assert all(0.0 <= row[k]["mean"] <= 100.0 for k in ("span_iou", "span_iou_correct_answer", "span_start_hit",
                                                              "span_end_hit"))
        assert 1.0 <= row["span_length"]["mean"] <= 8.0 and 0.0 <= row["attention_hit"]["mean"] <= 100.0
    selection = results["frame_selection"]
    assert list(selection) == ["teacher", "gt", "teacher|gt"]
    assert selection["gt"]["all"]["recall"] == 1.0 and selection["teacher|gt"]["all"]["recall"] == 1.0
    assert selection["gt"]["all"]["all_frames_rate"] < 1.0
    compared = results["against_teacher_frames"]
    assert set(compared) == {"+sparc [gt]", "+sparc [teacher|gt]"} and compared["+sparc [gt]"]["reference"] == "+sparc"
    assert compared["+sparc [gt]"]["delta"] == pytest.approx(results["accuracy"]["+sparc [gt]"]["mean"]
                                                             - results["accuracy"]["+sparc"]["mean"])


def test_span_iou_counts_frames_as_unit_intervals():
    from sparc.demo import frame_span_iou

    # [2, 4] vs [3, 6]: frames 3, 4 shared of 2..6 -> 2 / 5; the same span -> 1; disjoint -> 0;
    # one frame inside a 4-frame span -> 1 / 4
    iou = frame_span_iou([2, 1, 0, 5], [4, 3, 1, 5], [3, 1, 3, 4], [6, 3, 5, 7])
    assert iou.tolist() == [2 / 5, 1.0, 0.0, 1 / 4]


def test_top_region_hits_by_hand():
    from sparc.demo import top_region_hits

    # one question, one frame, three words, three regions (the last one padding)
    scores = torch.tensor([[[[0.1, 0.7, 9.0],        # best real region 1: a positive -> hit
                             [0.8, 0.2, 9.0],        # best real region 0: not the positive (1) -> miss
                             [0.3, 0.4, 0.0]]]])     # no positive: not a cell
    positive = torch.tensor([[[[False, True, False], [False, True, False], [False, False, False]]]])
    regions = torch.tensor([[[True, True, False]]])
    assert top_region_hits(scores, positive, regions) == (1, 2)
