"""DramaQA with SpARC: train HGA (multiple choice, word ids) on per-frame features of the released frames,
evaluate per difficulty on val.

    python recipes/dramaqa.py --data DATA --priors PRIORS/train --output runs/dramaqa-hga [--glove glove.6B.300d.txt]
    accelerate launch recipes/dramaqa.py --data DATA --priors PRIORS/train --output runs/dramaqa-hga
    python recipes/dramaqa.py --data DATA --images AnotherMissOh_images --frame-folders FRAMES  # the teacher's frames
    python recipes/dramaqa.py --smoke  # end to end on generated data in the released layout, under a minute

``DATA`` holds ``AnotherMissOh_QA/AnotherMissOhQA_{train,val,test}_set.json`` (the release, on request
from the authors) and ``AnotherMissOh_frame_features.h5``: per-frame features you extract from
``AnotherMissOh_images``, one dataset per shot ``AnotherMissOh{EE}_{SSS}_{TTTT}`` of shape
``(frames, D)``, rows in the shot folder's image order (sparc/data/dramaqa_features.py). A scene-level
question (shot 0000) sees the frames of its ``shot_contained`` shots, first to last. ``--frame-folders``
writes, for every question, the folder of exactly those frames (links to the released images) that
``sparc extract-priors --frames FRAMES`` reads; ``PRIORS`` is the teacher's store for train over 16
frames. Hyperparameters come from ``recipes/dramaqa_hga.json`` (each with its source); flags override
them. A killed run resumes from its newest checkpoint when started again with the same ``--output``.
Before the main stage, paper 002's question-prediction pretraining (``--pretrain-epochs``, default the
configuration's 1 epoch at lr 1e-5; 0 skips it) trains into ``OUTPUT/pretrain/`` and the main stage starts
from its weights; a rerun reuses a finished stage.
``OUTPUT/results.json`` holds the official per-difficulty and total accuracy on val
(``eval_submission.py``), the curve and the configuration; ``OUTPUT/predictions.json`` (val) and
``OUTPUT/test_predictions.json`` (test, for the organisers) are in the challenge's submission layout
``[{"correct_idx": k, "qid": qid}]``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from sparc.recipe import (add_pretrain_arguments, check_store, is_main_process, load_config, open_priors,
                          pretrain_settings, question_prediction_stage, recipe_parser, require, smoke_data,
                          sparc_techniques, train_and_predict, train_config,
                          training_report, uses_priors, write_results)

HERE = Path(__file__).resolve().parent
QA = "AnotherMissOh_QA"


def split_file(data: Path, split: str) -> Path:
    return data / QA / f"AnotherMissOhQA_{split}_set.json"


def build_hga(model_config: dict, seed: int, vocab_size: int, dim_vid: int, glove=None):
    """The reference HGA, multiple choice, with word ids."""
    from sparc.adapters.hga import HGA, EncoderQns, EncoderVidHGA

    torch.manual_seed(seed)
    m = model_config
    vid = EncoderVidHGA(dim_vid=dim_vid, dim_hidden=m["hidden"], input_dropout_p=m["dropout"])
    qns = EncoderQns(dim_embed=m["word_dim"], dim_hidden=m["hidden"], vocab_size=vocab_size, glove_embed=glove,
                     use_bert=False, input_dropout_p=m["dropout"])
    return HGA(vid, qns, block_kwargs=dict(m["block"]))


def write_smoke_data(root: Path, seed: int = 0, dim: int = 16, frames: int = 16) -> Path:
    """A tiny DramaQA in the released QA layout (``qid, que, answers, correct_idx, q_level_logic,
    q_level_mem, vid, shot_contained``; the test split without ``correct_idx``), per-frame features of
    its shots in the documented layout (random values, 2-9 frames a shot) and a teacher store for train
    over 16 frames. Levels 1-2 ask about one shot, 3-4 about a scene's shots ``shot_contained``."""
    import h5py

    from sparc.priors import PriorStore

    g = np.random.default_rng(seed)
    (root / QA).mkdir(parents=True, exist_ok=True)
    shots = [f"AnotherMissOh{e:02d}_{s:03d}_{t:04d}" for e in (1, 2) for s in (1, 2) for t in range(1, 5)]
    with h5py.File(root / "AnotherMissOh_frame_features.h5", "w") as f:
        for shot in shots:
            f[shot] = g.standard_normal((int(g.integers(2, 10)), dim), dtype=np.float32)
    splits = {"train": 30, "val": 12, "test": 6}
    qid = 1000
    for split, count in splits.items():
        entries = []
        for n in range(count):
            level = 1 + n % 4
            shot = shots[int(g.integers(len(shots)))]
            entry = {"qid": qid, "que": f"Why did Haeyoung{n % 3} go to the room {n}?",
                     "answers": [f"Because she wanted answer {k} {n % 5}." for k in range(5)],
                     "q_level_logic": level, "q_level_mem": 1 + n % 3, "vid": shot, "shot_contained": [int(shot[-4:])]}
            if level >= 3:   # a scene: shot 0000, and the shots it spans
                first = int(g.integers(1, 4))
                entry.update(vid=shot[:19] + "_0000", shot_contained=[first, int(g.integers(first, 5))])
            if split != "test":
                entry["correct_idx"] = int(g.integers(5))
            entries.append(entry)
            qid += 1
        split_file(root, split).write_text(json.dumps(entries))
        if split == "train":
            probs = np.full((count, frames, 5), 1.0, dtype=np.float32)
            for n, e in enumerate(entries):
                probs[n, 4:9, e["correct_idx"]] = 10.0
            probs /= probs.sum(axis=2, keepdims=True)
            PriorStore.from_arrays(root / "priors-train", [str(e["qid"]) for e in entries], probs)
    return root


def submission(table, predicted) -> list:
    """The challenge's answers.json layout (code/infer.py): ``[{"correct_idx": k, "qid": qid}]``, the qid
    as the release writes it (a number)."""
    return [{"correct_idx": int(p), "qid": int(q) if q.lstrip("-").isdigit() else q}
            for q, p in zip(table["qid"], predicted.tolist())]


def main(argv=None) -> dict:
    p = recipe_parser(__doc__, data_help=f"folder with {QA}/AnotherMissOhQA_{{train,val,test}}_set.json and the "
                                         "per-frame features AnotherMissOh_frame_features.h5")
    p.add_argument("--glove", help="a local GloVe text file (300-d) for the word embedding")
    p.add_argument("--images", help="with --frame-folders: the released AnotherMissOh_images folder")
    p.add_argument("--frame-folders", metavar="OUT", help="write the teacher's frame folders under OUT and stop")
    add_pretrain_arguments(p)
    args = p.parse_args(argv)
    config = load_config(args.config or HERE / "dramaqa_hga.json", args)
    if args.frame_folders:
        return frame_folders(args, p, config)
    if args.smoke:   # small everything: the pipeline, not the numbers
        data = smoke_data(args, p, write_smoke_data, "dramaqa")
        args.data, args.priors = str(data), str(data / "priors-train")
        config.update(epochs=2, batch_size=8, eval_batch_size=8)
        config["model"] = dict(config["model"], hidden=8, word_dim=8, block={"mm_dim": 8, "chunks": 2, "rank": 2})
    require(args, p, ("data", "output") + (("priors",) if uses_priors(args.techniques) else ()))

    import sparc
    from sparc.adapters import HGAAdapter
    from sparc.data.dramaqa import read_dramaqa_table
    from sparc.data.dramaqa_features import DramaQAFeatures, collate_dramaqa, texts
    from sparc.data.words import WordVocabulary, glove_matrix
    from sparc.metrics import dramaqa_accuracy

    data = Path(args.data)
    vocabulary = WordVocabulary.build(texts(read_dramaqa_table(split_file(data, "train"))))
    # the pretraining's masked answer and contrastive masking's masked words: one more word, no other id moves
    masks_words = bool(pretrain_settings(args, config)[0]) or "contrastive" in args.techniques.split(",")
    if masks_words:
        from sparc.data.question_prediction import MASK, with_mask_word

        vocabulary = with_mask_word(vocabulary)
    glove = None
    if args.glove:
        glove, found = glove_matrix(vocabulary, args.glove, dim=config["model"]["word_dim"], seed=args.seed)
        print(f"GloVe: {found} of {len(vocabulary)} words found in {args.glove}")
    split = lambda name: DramaQAFeatures(split_file(data, name), data / config["features"], vocabulary,
                                         num_frames=config["frames"], max_words=config["max_words"])
    train_set, val_set = split("train"), split("val")
    test_set = split("test") if split_file(data, "test").is_file() else None
    priors = open_priors(args)

    if priors is not None:
        check_store(priors, train_set.table["qid"], config["frames"], 5, split_file(data, "train"))
    dim_vid = config["model"]["dim_vid"] or train_set.feature_dim
    if dim_vid != train_set.feature_dim:
        raise ValueError(f"{train_set.features}: features of {train_set.feature_dim} dimensions, the configuration "
                         f"says dim_vid {dim_vid} (field: model.dim_vid)")
    # each build its own copy of the GloVe rows: the embedding would train the shared array in place
    build = lambda: build_hga(config["model"], args.seed, len(vocabulary), dim_vid, None if glove is None else glove.copy())
    backbone = build()
    # the answer masked as the vocabulary word <mask> (the reader's), the model built as the main stage's
    stages = question_prediction_stage(args, config, train_set, val_set, build, backbone, HGAAdapter(), collate_dramaqa)
    adapter = HGAAdapter(mask_token_id=vocabulary.index[MASK] if masks_words else None)
    model = sparc.wrap(backbone, adapter, sparc_techniques(args.techniques, config))
    tc = train_config(args, config)
    sets = {"val": val_set, **({"test": test_set} if test_set is not None else {})}
    result, predicted = train_and_predict(model, train_set, collate_dramaqa, tc, eval_set=val_set, priors=priors, predict_sets=sets)
    val_pred, test_pred = predicted["val"], predicted.get("test")
    report, files = {}, {}
    if is_main_process():
        answers = {q: {"correct_idx": int(k)} for q, k in zip(val_set.table["qid"], val_pred.tolist())}
        report = {"benchmark": "DramaQA val", "backbone": "hga", "techniques": args.techniques,
                  "metrics": dramaqa_accuracy(val_set.table, answers), "feature_dim": dim_vid,
                  "vocabulary": len(vocabulary), "glove": args.glove,
                  **training_report(result), **stages,
                  "config": config}
        files = {"predictions.json": submission(val_set.table, val_pred), "vocabulary.json": vocabulary.words}
        if test_pred is not None:
            files["test_predictions.json"] = submission(test_set.table, test_pred)
    return write_results(args.output, report, files)


def frame_folders(args, parser, config) -> dict:
    """``--frame-folders OUT``: the teacher's frame folder of every question of the three splits."""
    from sparc.data.dramaqa_features import link_frame_folders

    require(args, parser, ("data", "images"))
    data = Path(args.data)
    splits = [split_file(data, s) for s in ("train", "val", "test") if split_file(data, s).is_file()]
    features = data / config["features"]
    counts = link_frame_folders(splits, args.images, args.frame_folders, features if features.is_file() else None)
    print(f"{len(counts)} frame folders ({sum(counts.values())} frames) under {args.frame_folders}"
          + ("; frame counts checked against " + str(features) if features.is_file() else ""))
    return {"folders": len(counts), "frames": sum(counts.values())}


if __name__ == "__main__":
    main()
