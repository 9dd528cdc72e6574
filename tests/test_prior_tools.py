"""sparc.prior_tools and the ``sparc priors-stats`` / ``sparc viz-priors`` commands on a tiny store."""

import json
import os
import re

import numpy as np
import pytest
import torch

from sparc import select_causal_frames
from sparc.cli import main
from sparc.prior_tools import ALL_GROUP, check_answers, format_table, load_answers, prior_stats
from sparc.priors import PriorStore
from helpers import probs_with_answer

# P[t, correct answer] for 3 questions x 4 frames; the other two candidates share the rest.
P_ANSWER = {
    "q0": [0.9, 0.6, 0.4, 0.1],
    "q1": [0.2, 0.35, 0.8, 0.55],
    "q2": [0.1, 0.2, 0.25, 0.1],
}
ANSWER = {"q0": 0, "q1": 2, "q2": 1}
TYPE = {"q0": "what", "q1": "what", "q2": "why"}


@pytest.fixture
def store(tmp_path):
    qids = list(P_ANSWER)
    probs = np.stack([probs_with_answer(P_ANSWER[q], ANSWER[q]) for q in qids])
    return PriorStore.from_arrays(tmp_path / "store", qids, probs, shard_size=2)


@pytest.fixture
def answers_json(tmp_path):
    path = tmp_path / "answers.json"
    path.write_text(json.dumps({q: {"answer": ANSWER[q], "type": TYPE[q]} for q in P_ANSWER}))
    return str(path)


def _row(stats, threshold, group=ALL_GROUP):
    [row] = [r for r in stats["rows"] if r["threshold"] == threshold and r["group"] == group]
    return row


# ---- statistics -------------------------------------------------------------


def test_overall_stats_hand_computed(store, answers_json):
    stats = prior_stats(store, load_answers(answers_json), thresholds=[0.3, 0.5])
    # 0.3: q0 keeps 0.9, 0.6, 0.4; q1 keeps 0.35, 0.8, 0.55; q2 keeps nothing.
    r = _row(stats, 0.3)
    assert (r["questions"], r["frames"], r["kept_frames"], r["empty"]) == (3, 12, 6, 1)
    assert r["kept_fraction"] == pytest.approx(6 / 12)
    assert r["mean_kept"] == pytest.approx(2.0)
    assert r["empty_rate"] == pytest.approx(1 / 3)
    # 0.5: q0 keeps 0.9, 0.6; q1 keeps 0.8, 0.55; q2 nothing.
    r = _row(stats, 0.5)
    assert (r["kept_frames"], r["empty"]) == (4, 1)
    assert r["kept_fraction"] == pytest.approx(4 / 12)
    assert r["mean_kept"] == pytest.approx(4 / 3)
    assert r["empty_rate"] == pytest.approx(1 / 3)
    assert stats["by"] is None and len(stats["rows"]) == 2


def test_per_type_stats(store, answers_json):
    stats = prior_stats(store, load_answers(answers_json), thresholds=[0.3, 0.5], by="type")
    assert [(r["threshold"], r["group"]) for r in stats["rows"]] == [
        (0.3, ALL_GROUP), (0.3, "what"), (0.3, "why"), (0.5, ALL_GROUP), (0.5, "what"), (0.5, "why")]
    what3, why3 = _row(stats, 0.3, "what"), _row(stats, 0.3, "why")
    assert (what3["questions"], what3["kept_fraction"], what3["mean_kept"], what3["empty_rate"]) == (2, 0.75, 3.0, 0.0)
    assert (why3["questions"], why3["kept_fraction"], why3["mean_kept"], why3["empty_rate"]) == (1, 0.0, 0.0, 1.0)
    what5, why5 = _row(stats, 0.5, "what"), _row(stats, 0.5, "why")
    assert (what5["kept_fraction"], what5["mean_kept"], what5["empty_rate"]) == (0.5, 2.0, 0.0)
    assert (why5["kept_fraction"], why5["mean_kept"], why5["empty_rate"]) == (0.0, 0.0, 1.0)
    table = format_table(stats)
    assert "what" in table and "why" in table and "33.3" in table


def test_stats_agree_with_select_causal_frames_on_padded_store(tmp_path):
    rng = np.random.default_rng(0)
    lens = [4, 2, 3, 1]
    probs = [rng.dirichlet(np.ones(3) * 0.5, size=n) for n in lens]
    qids = [f"v{i}" for i in range(len(lens))]
    store = PriorStore.from_arrays(tmp_path / "padded", qids, probs, num_frames=4, num_candidates=3,
                                   pad_frames=True)
    answers = {q: a for q, a in zip(qids, [0, 1, 2, 1])}
    path = tmp_path / "answers.json"
    path.write_text(json.dumps(answers))
    stats = prior_stats(store, load_answers(path), thresholds=[0.2, 0.5])
    priors, lengths = store.lookup(qids, return_lengths=True)
    for t in (0.2, 0.5):
        keep = select_causal_frames(priors, torch.tensor(list(answers.values())), t, empty="skip", lengths=lengths)
        r = _row(stats, t)
        assert r["frames"] == sum(lens)
        assert r["kept_frames"] == int(keep.sum())
        assert r["empty"] == int((~keep.any(dim=1)).sum())


# ---- answers files and errors ----------------------------------------------------


def test_csv_and_list_answers(tmp_path, store):
    csv_path = tmp_path / "answers.csv"
    csv_path.write_text("qid,answer,type\n" + "".join(f"{q},{ANSWER[q]},{TYPE[q]}\n" for q in P_ANSWER))
    list_path = tmp_path / "answers_list.json"
    list_path.write_text(json.dumps([{"qid": q, "answer": ANSWER[q], "type": TYPE[q]} for q in P_ANSWER]))
    plain_path = tmp_path / "plain.json"
    plain_path.write_text(json.dumps(ANSWER))
    for path in (csv_path, list_path):
        a = load_answers(path)
        assert {q: r.answer for q, r in a.items()} == ANSWER
        assert {q: r.fields["type"] for q, r in a.items()} == TYPE
    assert {q: r.answer for q, r in load_answers(plain_path).items()} == ANSWER
    a, b = prior_stats(store, load_answers(csv_path), by="type"), prior_stats(store, load_answers(list_path), by="type")
    assert a["rows"] == b["rows"]


def test_errors_name_qid_and_field(tmp_path, store):
    def answers(obj, name="a.json"):
        path = tmp_path / name
        path.write_text(json.dumps(obj))
        return load_answers(path)

    with pytest.raises(ValueError, match=r"qid 'nope'.*not in prior store.*\(field: qid\)"):
        check_answers(store, answers({"q0": 0, "nope": 1}))
    with pytest.raises(ValueError, match=r"qid 'q1': answer index 3 is out of range for 3 candidates \(field: answer\)"):
        prior_stats(store, answers({"q0": 0, "q1": 3}))
    with pytest.raises(ValueError, match=r"qid 'q2': answer index -1 .*\(field: answer\)"):
        prior_stats(store, answers({"q2": -1}))
    with pytest.raises(ValueError, match=r"qid 'q0': answer 'x' is not an integer .*\(field: answer\)"):
        answers({"q0": "x"})
    with pytest.raises(ValueError, match=r"qid 'q0': no answer .*\(field: answer\)"):
        answers({"q0": {"type": "what"}})
    with pytest.raises(ValueError, match=r"qid 'q1': has no 'type' field .*\(field: type\)"):
        prior_stats(store, answers({"q0": {"answer": 0, "type": "what"}, "q1": 2}), by="type")
    with pytest.raises(ValueError, match=r"qid 'q0': appears twice .*\(field: qid\)"):
        answers([{"qid": "q0", "answer": 0}, {"qid": "q0", "answer": 1}])
    with pytest.raises(ValueError, match=r"no questions"):
        prior_stats(store, answers({}))
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("qid,label\nq0,1\n")
    with pytest.raises(ValueError, match=r"no 'answer' column \(field: answer\)"):
        load_answers(bad_csv)


# ---- command line ----------------------------------------------------------------


def test_cli_priors_stats(store, answers_json, tmp_path, capsys):
    out = tmp_path / "stats.json"
    assert main(["priors-stats", store.path, "--answers", answers_json, "--thresholds", "0.3", "0.5",
                 "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "why" in printed and "50.0" in printed  # by defaults to "type"; 0.3 keeps 50.0% overall
    stats = json.loads(out.read_text())
    assert stats["by"] == "type" and stats["thresholds"] == [0.3, 0.5]
    assert _row(stats, 0.5)["kept_frames"] == 4 and _row(stats, 0.5, "why")["empty_rate"] == 1.0


def test_cli_priors_stats_default_thresholds(store, answers_json, capsys):
    assert main(["priors-stats", store.path, "--answers", answers_json]) == 0
    printed = capsys.readouterr().out
    for t in ("0.3", "0.5", "0.7"):
        assert re.search(rf"^\s*{re.escape(t)}\s", printed, re.M)


def test_cli_errors(store, tmp_path, capsys):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"q0": 0, "ghost": 1}))
    assert main(["priors-stats", store.path, "--answers", str(path)]) == 2
    err = capsys.readouterr().err
    assert "qid 'ghost'" in err and "(field: qid)" in err
    path.write_text(json.dumps({"q0": 7}))
    assert main(["priors-stats", store.path, "--answers", str(path)]) == 2
    err = capsys.readouterr().err
    assert "qid 'q0'" in err and "(field: answer)" in err
    assert main(["priors-stats", str(tmp_path / "missing"), "--answers", str(path)]) == 2
    assert "no prior store" in capsys.readouterr().err


def test_cli_viz_priors(store, answers_json, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "viz"
    assert main(["viz-priors", store.path, "--answers", answers_json, "--out", str(out)]) == 0
    pngs = sorted(f for f in os.listdir(out) if f.endswith(".png"))
    assert len(pngs) == 3
    for f in pngs:
        assert (out / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "index.html").read_text()
    for q in P_ANSWER:
        assert q in page
    for f in pngs:
        assert f'src="{f}"' in page

    sub = tmp_path / "viz2"
    assert main(["viz-priors", store.path, "--answers", answers_json, "--out", str(sub),
                 "--qids", "q2", "q0", "--limit", "1", "--threshold", "0.3"]) == 0
    assert [f for f in os.listdir(sub) if f.endswith(".png")] == ["0000-q2.png"]
    assert "q2" in (sub / "index.html").read_text() and "q0" not in (sub / "index.html").read_text()

    capsys.readouterr()
    assert main(["viz-priors", store.path, "--answers", answers_json, "--out", str(sub), "--qids", "zzz"]) == 2
    err = capsys.readouterr().err
    assert "qid 'zzz'" in err and "(field: qid)" in err
