"""TVQA+ with SpARC: train STAGE on its released features, evaluate with the official TVQA+ metrics.

    python recipes/tvqaplus.py --data DATA --write-frame-ids PRIORS/frame_ids_train.json   # then extract-priors
    python recipes/tvqaplus.py --data DATA --priors PRIORS/train --output runs/tvqaplus-stage
    accelerate launch recipes/tvqaplus.py --data DATA --priors PRIORS/train --output runs/tvqaplus-stage
    python recipes/tvqaplus.py --smoke   # end to end on generated data in the released layout

``DATA/tvqa_plus_stage_features/`` is STAGE's feature release as jayleicn/TVQAplus's run_main.sh names it
(``tvqa_plus_{train,valid}_preprocessed.json``, ``tvqa_bbt_bottom_up_pool5_hq_20_100_pca.h5``,
``tvqa_bbt_frcn_vg_hq_20_100.json``, ``bbt_qa_s_tokenized_bert_sub_qa_tuned_new_qid.h5``,
``bbt_sub_s_tokenized_bert_sub_qa_tuned.h5``, ``tvqa_plus_subtitles.json``, ``word2idx.json``,
``eval_object_vocab.json``, ``frm_cnt_cache.json``) and ``DATA/tvqa_plus_annotations/tvqa_plus_val.json``
the official annotations the metric reads. ``PRIORS`` is the teacher's store for train over STAGE's
frames (per question: ``--write-frame-ids`` writes them, ``sparc extract-priors --frame-ids`` reads
them). Hyperparameters come from ``recipes/tvqaplus_stage.json`` (each with its source). The default
``--techniques sparc,span,attention`` trains the full STAGE's loss (answer + span + attention, TVQA+ 4.3)
with SpARC's +T+S in one wrap; ``,contrastive`` adds paper 002's contrastive masking. A killed run
resumes from its newest checkpoint when started again with the same ``--output``. Before the main stage,
paper 002's question-prediction pretraining (``--pretrain-epochs``, default the configuration's 1 epoch at
lr 1e-5; 0 skips it) trains into ``OUTPUT/pretrain/`` and the main stage starts from its weights; a rerun
reuses a finished stage. Results: the
official metrics on val in ``OUTPUT/results.json``, STAGE's prediction file in
``OUTPUT/valid_inference_predictions.json``. ``recipes/tvqa.py`` is the same recipe on the full TVQA.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from sparc.recipe import (add_pretrain_arguments, build_once, load_config, open_priors, question_prediction_stage,
                          recipe_parser, require, smoke_data, sparc_techniques, train_config, training_report,
                          write_results)

HERE = Path(__file__).resolve().parent
# TVQA+ trains STAGE's full loss (TVQA+ 4.3: answer + 0.5 span + 0.1 attention) with SpARC's +T+S; TVQA
# has no boxes, and the paper's GloVe backbone row trains the answer loss alone (span: its '+ Temp. Sup.').
DEFAULT_TECHNIQUES = {"tvqaplus": "sparc,span,attention", "tvqa": "sparc"}
FIXTURE = HERE.parent / "tests" / "fixtures" / "annotations" / "tvqaplus"

# STAGE's release (run_main.sh) and the official annotations, relative to DATA.
PLUS = {
    "dir": "tvqa_plus_stage_features",
    "questions": {"train": "tvqa_plus_train_preprocessed.json", "val": "tvqa_plus_valid_preprocessed.json"},
    "regions": "tvqa_bbt_bottom_up_pool5_hq_20_100_pca.h5",
    "boxes": "tvqa_bbt_frcn_vg_hq_20_100.json",
    "qa_bert": "bbt_qa_s_tokenized_bert_sub_qa_tuned_new_qid.h5",
    "sub_bert": "bbt_sub_s_tokenized_bert_sub_qa_tuned.h5",
    "subtitles": "tvqa_plus_subtitles.json",
    "word2idx": "word2idx.json",
    "object_vocab": "eval_object_vocab.json",
    "frame_counts": "frm_cnt_cache.json",
    "annotations": "tvqa_plus_annotations/tvqa_plus_val.json",
}
# The TVQA release (jayleicn/TVQA data/README.md, the features it links, TVRetrieval's subtitles).
FULL = {
    "dir": "tvqa",
    "questions": {"train": "tvqa_train.jsonl", "val": "tvqa_val.jsonl"},
    "frames": "tvqa_imagenet_pool5.h5",
    "subtitles": "tvqa_preprocessed_subtitles.jsonl",
    "frame_counts": "frm_cnt_cache.json",
    "glove": "glove.6B.300d.txt",
}


# --------------------------------------------------------------------------- files built once per run


def glove_cache(args, config, train_questions: Path, subtitles) -> tuple:
    """(WordVocabulary, GloVe matrix) for TVQA: the train split's words (questions, answers and the
    subtitles of the train videos) seen ``word_count_threshold`` times, embedded from ``--glove``; cached
    in ``OUTPUT/cache`` by the first process."""
    from sparc.data.tvqa import read_tvqa_table
    from sparc.data.words import WordVocabulary, glove_matrix

    cache = Path(args.output) / "cache"
    vocab_path, matrix_path = cache / "tvqa_vocabulary.json", cache / "tvqa_glove.npy"

    def build(path):
        table = read_tvqa_table(train_questions)
        texts = list(table["question"]) + [c for cands in table["candidates"] for c in cands]
        for vid in dict.fromkeys(table["vid_name"]):
            texts += subtitles.sentences(vid, f"{train_questions} (video {vid})")[0]
        vocabulary = WordVocabulary.build(texts, min_count=config["word_count_threshold"])
        matrix, _ = glove_matrix(vocabulary, args.glove, dim=config["model"]["embedding_size"], seed=args.seed)
        cache.mkdir(parents=True, exist_ok=True)
        vocabulary.save(vocab_path)
        np.save(str(matrix_path) + ".tmp.npy", matrix)
        os.replace(str(matrix_path) + ".tmp.npy", matrix_path)

    build_once(matrix_path, build, "the GloVe matrix")
    return WordVocabulary.load(vocab_path), np.load(matrix_path)


# --------------------------------------------------------------------------- the readers


def limits(config):
    from sparc.data.tvqa_stage import STAGELimits

    return STAGELimits(num_region=config["num_region"], max_sub_l=config["max_sub_l"], max_qa_l=config["max_qa_l"],
                       att_iou_thd=config["att_iou_thd"])


def plus_split(data: Path, name: str, config, output: Path, check: bool = True):
    from sparc.data.tvqa_stage import STAGEQuestions
    from sparc.data.tvqa_stage_files import RegionFeatures, STAGESubtitles, STAGEText, build_boxes_cache

    d = data / PLUS["dir"]
    cache = output / "cache" / (Path(PLUS["boxes"]).stem + ".boxes.h5")
    visual = text = subtitles = None
    if check:
        build_once(cache, lambda path: build_boxes_cache(d / PLUS["boxes"], path), "the boxes cache")
        visual = RegionFeatures(d / PLUS["regions"], cache, d / PLUS["boxes"], config["num_region"])
        text = STAGEText(d / PLUS["qa_bert"], d / PLUS["sub_bert"], d / PLUS["word2idx"])
        subtitles = STAGESubtitles(d / PLUS["subtitles"])
    return STAGEQuestions(d / PLUS["questions"][name], d / PLUS["frame_counts"], visual, text, subtitles,
                          limits(config), attention=True, check=check)


def full_split(data: Path, name: str, config, args, check: bool = True):
    from sparc.data.tvqa_stage import STAGEQuestions
    from sparc.data.tvqa_stage_files import FrameFeatures, GloveText, TVRSubtitles

    d = data / FULL["dir"]
    visual = text = subtitles = None
    if check:
        subtitles = TVRSubtitles(d / FULL["subtitles"])
        vocabulary, matrix = glove_cache(args, config, d / FULL["questions"]["train"], subtitles)
        visual, text = FrameFeatures(d / FULL["frames"]), GloveText(vocabulary, matrix)
    return STAGEQuestions(d / FULL["questions"][name], d / FULL["frame_counts"], visual, text, subtitles,
                          limits(config), attention=False, check=check)


# --------------------------------------------------------------------------- the model and its predictions


def build_stage(model_config: dict, seed: int):
    from sparc.adapters.stage import STAGE, stage_opt

    torch.manual_seed(seed)
    return STAGE(stage_opt(**model_config))


def object_word_ids(data: Path):
    """``eval_object_word_ids`` of ``tvqa_dataset.py``: the evaluation vocabulary's ids, ``<unk>`` for the
    words outside ``word2idx.json`` (so ``<unk>`` hypothesis words get box records too, as there)."""
    d = data / PLUS["dir"]
    word2idx = json.loads((d / PLUS["word2idx"]).read_text())
    return {int(word2idx.get(w, word2idx["<unk>"])) for w in json.loads((d / PLUS["object_vocab"]).read_text())}


@torch.no_grad()
def predict_rows(model, dataset, batch_size: int, num_workers: int, object_words=None, score_thd: float = 0.2):
    """One row per question of ``dataset`` (every process scores its share, the rows are gathered):
    ``{index, qid, answer (predicted), span (seconds), boxes}`` where ``boxes`` holds the box records of
    the ground-truth answer's hypothesis (the only one the official metric reads) when
    ``object_words`` is given. The model is the wrapped STAGE (its eval forward is the bare model's)."""
    from accelerate import PartialState
    from accelerate.utils import gather_object

    from sparc.data.tvqa_inference import box_records, find_max_pair, span_seconds
    from sparc.data.tvqa_stage import collate_stage

    state = PartialState()
    mine = list(range(state.process_index, len(dataset), state.num_processes))
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, mine), batch_size=batch_size,
                                         collate_fn=collate_stage, num_workers=num_workers)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    rows = []
    for batch in loader:
        inputs = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
        out = model(inputs)
        pred = out.logits.argmax(dim=-1).cpu()
        p_st, p_ed = (torch.softmax(s.float(), dim=-1).cpu() for s in out.span_logits)
        attention = None if out.attention is None or object_words is None else out.attention.float().cpu().numpy()
        for b in range(len(batch["qid"])):
            a = int(pred[b])
            (st, ed), _ = find_max_pair(p_st[b, a].tolist(), p_ed[b, a].tolist())
            row = {"index": int(batch["index"][b]), "qid": batch["qid"][b], "answer": a,
                   "span": span_seconds(st, ed, int(batch["frame_ids"][b, 0])), "boxes": {}}
            truth, first, last = int(batch["answer"][b]), int(batch["anno_st_idx"][b]), int(batch["anno_ed_idx"][b])
            if attention is not None and truth >= 0 and first >= 0:
                kept = batch["vid_mask"][b].gt(0).sum(dim=1).tolist()
                boxes = [batch["boxes"][b, t, :kept[t]].tolist() for t in range(first, last + 1)]
                row["boxes"][truth] = box_records(attention[b, truth], batch["qas"][b, truth].tolist(), object_words,
                                                  boxes, batch["frame_ids"][b].tolist(), first, int(batch["qid"][b]),
                                                  batch["vid_name"][b], score_thd)
            rows.append(row)
    model.train(was_training)
    if state.num_processes > 1:
        rows = gather_object(rows)
    return sorted({r["index"]: r for r in rows}.values(), key=lambda r: r["index"])


# --------------------------------------------------------------------------- ground-truth causal frames


def add_frames_argument(p) -> None:
    p.add_argument("--frames", default="teacher", choices=("teacher", "gt", "teacher&gt", "teacher|gt"),
                   help="the causal frames SpARC's terms train on: the teacher's priors above the threshold "
                        "(teacher, the paper's), the annotated span (gt: ts_label_st..ts_label_ed; TVQA's "
                        "questions without a span keep every frame), or the teacher's frames inside the span / "
                        "together with it (teacher&gt, teacher|gt; quote them in a shell)")


def frames_selection(choice: str, config, techniques) -> tuple:
    """``(techniques, wrap's frames)`` for ``--frames``: the techniques built for the teacher's frames
    (``CausalFrames(config threshold)``) pointed at the choice's selection
    (:func:`sparc.selection.frames_choice` over STAGE's span labels). ``teacher`` changes nothing; another
    choice needs a technique that reads causal frames."""
    from sparc.selection import CausalFrames, declare_frames, frames_choice

    if choice == "teacher":
        return techniques, None
    if not any(t.needs_frames for t in techniques):
        raise ValueError(f"--frames {choice}: no technique reads causal frames (--techniques plain); use sparc")
    selector = frames_choice(choice, config["threshold"])
    return declare_frames(techniques, selector, CausalFrames(config["threshold"])), selector


# --------------------------------------------------------------------------- smoke data


def _smoke_questions(n_train: int = 8, n_val: int = 8):
    """Real TVQA+ val questions (the test fixture) of its shortest-annotated videos (fewest frames to
    compute), a video's questions all in one split: the first videos for train, the next for val."""
    records = json.loads((FIXTURE / "tvqa_plus_val.json").read_text())
    by_video = {}
    for r in records:
        by_video.setdefault(r["vid_name"], []).append(r)
    last = {v: max(int(f) for r in qs for f in r["bbox"]) for v, qs in by_video.items()}
    train, val = [], []
    for v in sorted(by_video, key=lambda v: (last[v], v)):
        questions = by_video[v]
        if len(train) < n_train:
            train += questions[:n_train - len(train)]
        elif len(val) < n_val:
            val += questions[:n_val - len(val)]
    return train, val


def _smoke_priors(path: Path, qids, frame_lists, answers, g):
    """Priors over each question's frames: the answer above the 0.5 threshold in the middle third (0.9), a
    uniform guess (0.2) elsewhere, so the causal frames are a real subset."""
    from sparc.priors import PriorStore

    probs = []
    for frames, a in zip(frame_lists, answers):
        p = np.full((len(frames), 5), 0.1 / 4, dtype=np.float32)
        p[len(frames) // 3: 2 * len(frames) // 3 + 1, a] = 0.9
        p += g.uniform(0, 0.01, p.shape).astype(np.float32)
        probs.append(p / p.sum(axis=1, keepdims=True))
    PriorStore.from_arrays(path, qids, probs, num_frames=max(len(f) for f in frame_lists), num_candidates=5,
                           pad_frames=True)


def write_smoke_data(root: Path, seed: int = 0) -> Path:
    """A tiny TVQA+ in STAGE's release layout around 16 real val questions: their annotations (with the
    preprocessed files' ``*_len`` fields), random region features split by per-frame ``counts`` (some
    frames over the 25 kept), detector boxes with one region near each ground-truth box, token features
    of the exact shapes, subtitles, the real ``word2idx.json``, an object vocabulary of the questions'
    box labels, frame counts; and a prior store over STAGE's frames of the train questions."""
    import h5py

    from sparc.data.tvqa_att import gt_corners
    from sparc.data.tvqa_stage import question_frames

    g = np.random.default_rng(seed)
    d = root / PLUS["dir"]
    d.mkdir(parents=True, exist_ok=True)
    (root / "tvqa_plus_annotations").mkdir(exist_ok=True)
    train, val = _smoke_questions()
    videos = list(dict.fromkeys(r["vid_name"] for r in train + val))
    frame_counts = {}
    for v in videos:
        last = max(int(f) for r in train + val if r["vid_name"] == v for f in r["bbox"])
        frame_counts[v] = min(300, last + int(g.integers(3, 12)))
    for name, records in (("train", train), ("val", val)):
        pre = [dict(r, q_len=len(r["q"].split()), **{f"a{k}_len": len(r[f"a{k}"].split()) for k in range(5)})
               for r in records]
        (d / PLUS["questions"][name]).write_text(json.dumps(pre))
    (root / PLUS["annotations"]).write_text(json.dumps(val))
    (d / PLUS["frame_counts"]).write_text(json.dumps(frame_counts))
    (d / PLUS["word2idx"]).write_bytes((FIXTURE / "word2idx.json").read_bytes())
    labels = sorted({b["label"].lower() for r in train + val for boxes in r["bbox"].values() for b in boxes})
    (d / PLUS["object_vocab"]).write_text(json.dumps(labels + ["cup", "notaword"]))

    gt_of = {}
    for r in train + val:
        for f, boxes in r["bbox"].items():
            gt_of.setdefault((r["vid_name"], int(f)), []).extend(boxes)
    detections = {}
    with h5py.File(d / PLUS["regions"], "w") as regions:
        for v in videos:
            counts = g.integers(3, 32, size=frame_counts[v]).tolist()
            frames = []
            for f in range(frame_counts[v]):
                x1, y1 = g.uniform(0, 500, counts[f]), g.uniform(0, 250, counts[f])
                boxes = np.stack([x1, y1, x1 + g.uniform(20, 140, counts[f]), y1 + g.uniform(20, 110, counts[f])], 1)
                for j, gt in enumerate(gt_of.get((v, f + 1), [])[: counts[f]]):
                    boxes[j] = np.asarray(gt_corners(gt), dtype=np.float64) + g.uniform(-2, 2, 4)
                frames.append(np.round(boxes, 2).tolist())
            detections[v] = {"boxes": frames, "counts": counts,
                             "object": [[str(w) for w in g.choice(labels, n)] for n in counts]}
            regions[v] = g.standard_normal((sum(counts), 300), dtype=np.float32)
    (d / PLUS["boxes"]).write_text(json.dumps(detections))

    subtitles = {}
    with h5py.File(d / PLUS["sub_bert"], "w") as subs:
        for v in videos:
            n = int(g.integers(4, 10))
            sentences = [" ".join(g.choice(["hey", "leonard", ",", "penny", "you", "know", "?", "sheldon"],
                                           int(g.integers(2, 9)))) for _ in range(n)]
            times = np.sort(g.uniform(0, frame_counts[v] / 3, n)).round(3).tolist()
            subtitles[v] = {"sub_text": " <eos> ".join(sentences), "sub_time": times}
            subs[v] = g.standard_normal((sum(len(s.split()) for s in sentences), 768), dtype=np.float32)
    (d / PLUS["subtitles"]).write_text(json.dumps(subtitles))
    with h5py.File(d / PLUS["qa_bert"], "w") as qa:
        for r in train + val:
            qa[f"{r['qid']}_q"] = g.standard_normal((len(r["q"].split()), 768), dtype=np.float32)
            for k in range(5):
                qa[f"{r['qid']}_a{k}"] = g.standard_normal((len(r[f"a{k}"].split()), 768), dtype=np.float32)

    frame_lists = [question_frames(r["bbox"], frame_counts[r["vid_name"]], "smoke")[0] for r in train]
    _smoke_priors(root / "priors-train", [str(r["qid"]) for r in train], frame_lists,
                  [int(r["answer_idx"]) for r in train], g)
    return root


def write_tvqa_smoke_data(root: Path, seed: int = 0, questions: int = 16, videos: int = 6) -> Path:
    """A tiny TVQA in its release layout: jsonl questions (int answers, "st-ed" spans, one NaN span),
    ImageNet pool5 features per 3-fps frame, TVRetrieval's subtitle jsonl, frame counts, a small GloVe
    text file (some words missing), and a prior store over STAGE's frames of the train questions."""
    import h5py

    from sparc.data.tvqa import stage_frame_ids

    g = np.random.default_rng(seed)
    d = root / FULL["dir"]
    d.mkdir(parents=True, exist_ok=True)
    words = ["what", "did", "leonard", "say", "to", "penny", "a", "cup", "of", "coffee", "why", "is", "sheldon",
             "angry", "where", "are", "they", "the", "couch", "kitchen", "hallway", "because", "he", "lost"]
    sentence = lambda n: " ".join(g.choice(words, n))
    counts, lines = {}, {}
    for split, offset in (("train", 0), ("val", 100)):
        # BBT clips have no show prefix in TVQA's vid_name
        vids = [f"friends_s01e0{1 + offset // 100}_seg01_clip_{v:02d}" if v % 2 else f"s01e0{1 + offset // 100}_seg02_clip_{v:02d}"
                for v in range(videos)]
        rows = []
        for n in range(questions):
            vid = vids[n % videos]
            counts.setdefault(vid, int(g.integers(60, 200)))
            st = float(g.uniform(0, counts[vid] / 3 - 8))
            ts = "NaN-NaN" if n == 3 else f"{st:.2f}-{st + float(g.uniform(2, 8)):.2f}"
            rows.append({"qid": offset * 10 + n, "q": sentence(6) + " ?", **{f"a{k}": sentence(4) for k in range(5)},
                         "answer_idx": int(g.integers(5)), "ts": ts, "vid_name": vid,
                         "show_name": "Friends" if vid.startswith("friends") else "The Big Bang Theory"})
        lines[split] = rows
        (d / FULL["questions"][split]).write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / FULL["frame_counts"]).write_text(json.dumps(counts))
    with h5py.File(d / FULL["frames"], "w") as f:
        for vid, n in counts.items():
            f[vid] = g.standard_normal((n, 2048), dtype=np.float32)
    with open(d / FULL["subtitles"], "w") as f:
        for vid, n in counts.items():
            starts = np.sort(g.uniform(0, n / 3, 6)).round(2)
            subs = [{"text": sentence(5), "start": float(s), "end": float(s) + 1.5} for s in starts]
            f.write(json.dumps({"vid_name": vid, "sub": subs}) + "\n")
    with open(d / FULL["glove"], "w") as f:
        for w in words[:-4]:       # the last words stay outside GloVe
            f.write(w + " " + " ".join(f"{x:.4f}" for x in g.standard_normal(300)) + "\n")
    train = lines["train"]
    _smoke_priors(root / "priors-train", [str(r["qid"]) for r in train],
                  [stage_frame_ids(1, counts[r["vid_name"]]) for r in train], [r["answer_idx"] for r in train], g)
    return root


# --------------------------------------------------------------------------- the run


def main(argv=None, benchmark: str = "tvqaplus", doc: str = __doc__) -> dict:
    """The recipe for ``benchmark`` "tvqaplus" (this file) or "tvqa" (``recipes/tvqa.py``, its ``doc``)."""
    plus = benchmark == "tvqaplus"
    p = recipe_parser(doc, techniques=DEFAULT_TECHNIQUES[benchmark],
                      data_help="folder with tvqa_plus_stage_features/ and tvqa_plus_annotations/" if plus
                      else "folder with tvqa/ (questions, tvqa_imagenet_pool5.h5, subtitles, frame counts)")
    p.add_argument("--write-frame-ids", metavar="JSON",
                   help="write {qid: [1-indexed 3-fps frame numbers]} of --split's questions (STAGE's frames, for "
                        "sparc extract-priors --frame-ids) and exit")
    p.add_argument("--split", default="train", choices=("train", "val"), help="the split of --write-frame-ids")
    if not plus:
        p.add_argument("--glove", help="GloVe 300-d text file (default DATA/tvqa/glove.6B.300d.txt)")
    add_pretrain_arguments(p)
    add_frames_argument(p)
    args = p.parse_args(argv)
    if not plus and "attention" in args.techniques.split(","):
        p.error("--techniques: attention supervision needs box annotations, which TVQA has none of (its reader "
                "gives no att_labels); TVQA+ has them (recipes/tvqaplus.py)")

    config = load_config(args.config or HERE / f"{benchmark}_stage.json", args)
    if args.write_frame_ids:
        require(args, p, ("data",))
        from sparc.data.tvqa_stage import write_frame_ids

        split = (plus_split(Path(args.data), args.split, config, Path("."), check=False) if plus
                 else full_split(Path(args.data), args.split, config, args, check=False))
        print(f"wrote the frames of {len(split)} questions to {write_frame_ids(split, args.write_frame_ids)}")
        return {}
    if args.smoke:   # small everything: the pipeline, not the numbers
        data = smoke_data(args, p, write_smoke_data if plus else write_tvqa_smoke_data, benchmark)
        args.data, args.priors = str(data), str(data / "priors-train")
        config.update(epochs=2, batch_size=8, eval_batch_size=8)
        config["model"] = dict(config["model"], hsz=16, dropout=0.0)
    require(args, p, ("data", "priors", "output"))
    if not plus and not args.glove:
        args.glove = str(Path(args.data) / FULL["dir"] / FULL["glove"])

    import sparc
    from sparc.adapters import STAGEAdapter
    from sparc.data.tvqa_inference import stage_predictions
    from sparc.data.tvqa_stage import collate_stage, prior_lookup
    from sparc.train import train

    data, output = Path(args.data), Path(args.output)
    split = (lambda name: plus_split(data, name, config, output)) if plus else (lambda name: full_split(data, name, config, args))
    train_set, val_set = split("train"), split("val")
    backbone = build_stage(config["model"], args.seed)
    stages = question_prediction_stage(args, config, train_set, val_set, lambda: build_stage(config["model"], args.seed),
                                       backbone, STAGEAdapter(), collate_stage)
    techniques = sparc_techniques(args.techniques, config, text_width=config["model"]["embedding_size"])
    techniques, frames = frames_selection(args.frames, config, techniques)
    model = sparc.wrap(backbone, STAGEAdapter(), techniques, frames=frames)
    store = open_priors(args)
    result = train(model, train_set, collate_stage, train_config(args, config), eval_set=val_set,
                   priors=None if store is None else prior_lookup(store))

    rows = predict_rows(model, val_set, config["eval_batch_size"], args.num_workers,
                        object_word_ids(data) if plus else None, config.get("score_thd", 0.2))
    report = {"benchmark": "TVQA+ val" if plus else "TVQA val", "backbone": "stage", "techniques": args.techniques,
              "frames": args.frames,
              "trained": [type(t).__name__ for t in techniques],   # loss_terms: what each added
              **training_report(result), **stages, "config": config}
    if plus:
        from sparc.metrics import tvqaplus_metrics

        predictions = stage_predictions(rows)
        predictions["raw_bbox"] = [entry for entry in predictions["raw_bbox"] if any(entry.values())]
        report["metrics"] = tvqaplus_metrics(data / PLUS["annotations"], predictions,
                                             data / PLUS["dir"] / PLUS["word2idx"])
        files = {"valid_inference_predictions.json": predictions}
    else:
        answers = dict(zip(val_set.table["qid"], val_set.table["answer"]))
        qid2preds = {r["qid"]: r["answer"] for r in rows}
        report["metrics"] = {"qa_acc": float(np.mean([qid2preds[q] == answers[q] for q in qid2preds]))}
        files = {"qid2preds_valid.json": qid2preds}
    return write_results(args.output, report, files)


if __name__ == "__main__":
    main()
