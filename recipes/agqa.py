"""AGQA 2.0 with SpARC: train the open-ended HGA on the AGQA baselines' features, evaluate on the test split.

    python recipes/agqa.py --data DATA --priors PRIORS/train --output runs/agqa-hga [--glove glove.840B.300d.txt]
    accelerate launch recipes/agqa.py --data DATA --priors PRIORS/train --output runs/agqa-hga
    python recipes/agqa.py --smoke  # end to end on generated data in the released layouts, under a minute

``DATA`` holds ``AGQA_balanced/{train,test}_balanced.txt`` (AGQA 2.0 balanced, one JSON object keyed
by question id) and the AGQA baselines' video features in HME's layout: ``TGIF_RESNET_pool5.hdf5``,
``TGIF_RESNEXT.hdf5`` (dataset ``resnet_features``, ``(videos, frames, 2048)``) and
``strID2numID.json`` (Charades id -> row). ``PRIORS`` is the teacher's open-ended store for the train
split over 8 frames (``sparc extract-priors --answers-from .../train_balanced.txt --num-frames 8``);
its recorded answer list is the model's answer set. Hyperparameters come from
``recipes/agqa_hga.json`` (each with its source; SpARC Table 6 trains AGQA without augmentation, so
the default techniques are ``sparc``); flags override them. 10 % of the train videos are held out for
validation (``sparc.data.agqa.validation_split``). A killed run resumes from its newest checkpoint when
started again with the same ``--output``. ``OUTPUT/results.json`` holds AGQA's binary / open / total
accuracy on test (and on the held-out videos), the curve and the configuration;
``OUTPUT/predictions.json`` ``{qid: {"prediction": answer, "answer": answer}}``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from sparc.recipe import (build_once, check_store, is_main_process, load_config, open_priors, recipe_parser,
                          require, smoke_data, sparc_techniques, train_and_predict, train_config, training_report,
                          uses_priors, write_results)

HERE = Path(__file__).resolve().parent


def build_hga(model_config: dict, seed: int, vocab_size: int, num_answers: int, glove=None):
    """The reference HGA with word ids and the open-ended head over ``num_answers``."""
    from sparc.adapters.hga import HGA, EncoderQns, EncoderVidHGA

    torch.manual_seed(seed)
    m = model_config
    vid = EncoderVidHGA(dim_vid=m["dim_vid"], dim_hidden=m["hidden"], input_dropout_p=m["dropout"])
    qns = EncoderQns(dim_embed=m["word_dim"], dim_hidden=m["hidden"], vocab_size=vocab_size, glove_embed=glove,
                     use_bert=False, input_dropout_p=m["dropout"])
    return HGA(vid, qns, block_kwargs=dict(m["block"]), num_answers=num_answers)


SMOKE_ANSWERS = ["Yes", "No", "table", "chair", "phone", "before", "after", "sitting"]


def write_smoke_data(root: Path, train_questions: int = 40, test_questions: int = 16, videos: int = 8,
                     frames: int = 11, seed: int = 0) -> Path:
    """A tiny AGQA 2.0 in the released layouts: ``{train,test}_balanced.txt`` (one JSON object keyed
    by question id, every field of the release), the HME-layout feature files and ``strID2numID.json``
    (random values), and an open-ended teacher store for train over 8 frames whose answer list is
    SpARC's rule over train. One train answer occurs once (outside the set: train leaves it out) and
    one test answer never occurs in train (scored wrong)."""
    import h5py

    from sparc.data.questions import answers_by_count
    from sparc.priors import PriorStore

    g = np.random.default_rng(seed)
    charades = [f"{chr(65 + v)}{v:02d}X{v}" for v in range(videos)]   # 5-character Charades-style ids
    (root / "AGQA_balanced").mkdir(parents=True, exist_ok=True)

    def record(n, split, answer):
        binary = answer in ("Yes", "No")
        rec = {"question": f"Was the person {'sitting' if n % 2 else 'holding'} a thing {n} before they left?",
               "answer": answer, "video_id": charades[n % videos], "global": ["exists", "obj-rel"],
               "local": "yes-no-o4" if binary else "obj-what", "ans_type": "binary" if binary else "open",
               "steps": int(g.integers(1, 8)), "semantic": "object", "structural": "verify" if binary else "query",
               "novel_comp": 0, "more_steps": 0, "sg_grounding": {}, "program": "Exists(table, Iterate(...))"}
        if split == "test":
            rec.update(nc_seq=0, nc_sup=0, nc_dur=0, nc_objrel=0, indirect=0, i_obj=0, i_rel=0, i_act=0, i_temp=0,
                       direct_equiv="")
        return rec

    train_answers = [SMOKE_ANSWERS[i % len(SMOKE_ANSWERS)] for i in range(train_questions - 1)] + ["lamp"]
    test_answers = [SMOKE_ANSWERS[i % len(SMOKE_ANSWERS)] for i in range(test_questions - 1)] + ["doorknob"]
    splits = {"train": {f"{1000 + n}": record(n, "train", a) for n, a in enumerate(train_answers)},
              "test": {f"{5000 + n}": record(n, "test", a) for n, a in enumerate(test_answers)}}
    for split, records in splits.items():
        (root / "AGQA_balanced" / f"{split}_balanced.txt").write_text(json.dumps(records))
    (root / "strID2numID.json").write_text(json.dumps({c: n for n, c in enumerate(charades)}))
    for name in ("TGIF_RESNET_pool5.hdf5", "TGIF_RESNEXT.hdf5"):
        with h5py.File(root / name, "w") as f:
            f["resnet_features"] = g.standard_normal((videos, frames, 2048), dtype=np.float32)

    from collections import Counter

    answers = list(answers_by_count(Counter(train_answers), 2))
    qids = list(splits["train"])
    probs = np.full((len(qids), 8, len(answers)), 1.0, dtype=np.float32)
    for n, a in enumerate(train_answers):
        if a in answers:
            probs[n, 2:5, answers.index(a)] = 12.0        # the teacher finds the answer in frames 2-4
    probs /= probs.sum(axis=2, keepdims=True)
    PriorStore.from_arrays(root / "priors-train", qids, probs, metadata={"answers": answers, "num_frames": 8})
    return root


def keep_in_set(table, classes: dict):
    """(the rows whose answer is in the answer set, how many were left out): a train question outside
    the set has no class to learn."""
    from sparc.data.agqa_features import column

    inside = np.fromiter((a in classes for a in column(table, "answer")), dtype=bool, count=len(table))
    if inside.all():
        return table, 0
    return table.select(np.flatnonzero(inside)), int((~inside).sum())


def answer_predictions(table, predicted, answers):
    """``{qid: {"prediction": answer, "answer": answer}}`` in the table's order."""
    from sparc.data.agqa_features import CHUNK

    out, start = {}, 0
    predicted = predicted.tolist()
    for batch in table.iter(batch_size=CHUNK):
        for qid, answer, p in zip(batch["qid"], batch["answer"], predicted[start:start + len(batch["qid"])]):
            out[qid] = {"prediction": answers[p], "answer": answer}
        start += len(batch["qid"])
    return out


def main(argv=None) -> dict:
    p = recipe_parser(__doc__, data_help="folder with AGQA_balanced/{train,test}_balanced.txt, the HME-layout features "
                                         "and strID2numID.json", techniques="sparc")
    p.add_argument("--glove", help="a local GloVe text file (300-d, 'word v1 .. v300' per line) for the word embedding")
    args = p.parse_args(argv)

    config = load_config(args.config or HERE / "agqa_hga.json", args)
    if args.smoke:   # small everything: the pipeline, not the numbers
        data = smoke_data(args, p, write_smoke_data, "agqa")
        args.data, args.priors = str(data), str(data / "priors-train")
        config.update(epochs=2, batch_size=8, eval_batch_size=8)
        config["model"] = dict(config["model"], hidden=8, word_dim=8, block={"mm_dim": 8, "chunks": 2, "rank": 2})
    require(args, p, ("data", "output") + (("priors",) if uses_priors(args.techniques) else ()))

    import sparc
    from sparc.adapters import HGAAdapter
    from sparc.data.agqa import read_agqa_table, validation_split
    from sparc.data.agqa_features import AGQAFeatures, answer_counts, collate_agqa, column, read_str2num
    from sparc.data.answer_sets import answer_set_from_config, store_answer_set
    from sparc.data.words import WordVocabulary, answer_index, glove_matrix
    from sparc.metrics import agqa_accuracy

    data, out = Path(args.data), Path(args.output)
    train_file, test_file = data / "AGQA_balanced" / "train_balanced.txt", data / "AGQA_balanced" / "test_balanced.txt"
    # Arrow on disk, memory-mapped. The first process writes the tables and the others then read its files
    # (two processes generating one cache folder at once would race); the marker names the files' versions.
    tables = lambda: (read_agqa_table(train_file, cache_dir=out / "tables" / "train"),
                      read_agqa_table(test_file, cache_dir=out / "tables" / "test"))
    stamp = "-".join(str(int(os.path.getmtime(f) * 1e6)) for f in (train_file, test_file))
    build_once(out / "tables" / f"READY-{stamp}", lambda marker: (tables(), marker.write_text("ok\n")), "the tables")
    full_train, test_table = tables()
    priors = open_priors(args)
    counts = answer_counts(full_train)
    answers = answer_set_from_config(counts, config["answer_set"])
    if priors is not None:   # the store's list, in its order (prior [t, c] is answer c of it), checked against the rule
        answers = store_answer_set(priors, counts, str(train_file), expected=answers)
    classes = answer_index(answers)
    train_part, val_part = validation_split(full_train, **config["validation"])
    train_in, left_out = keep_in_set(train_part, classes)
    # The vocabulary of the whole train file, as the baselines build theirs before holding videos out.
    vocabulary = WordVocabulary.build(column(full_train, "question"))
    glove = None
    if args.glove:
        glove, found = glove_matrix(vocabulary, args.glove, dim=config["model"]["word_dim"], seed=args.seed)
        print(f"GloVe: {found} of {len(vocabulary)} words found in {args.glove}")

    f = config["features"]
    str2num = read_str2num(data / f["str2num"])
    split = lambda table, annotations: AGQAFeatures(table, data / f["appearance"], data / f["motion"], str2num,
                                                    vocabulary, answers, num_frames=config["frames"],
                                                    max_words=config["max_words"], dataset=f["dataset"],
                                                    annotations=annotations)
    train_set, val_set, test_set = split(train_in, train_file), split(val_part, train_file), split(test_table, test_file)
    if priors is not None:
        check_store(priors, column(train_in, "qid"), config["frames"], len(answers), train_file)

    backbone = build_hga(config["model"], args.seed, len(vocabulary), len(answers), glove)
    model = sparc.wrap(backbone, HGAAdapter(open_ended=True, num_answers=len(answers)),
                       sparc_techniques(args.techniques, config))
    tc = train_config(args, config)
    result, predicted = train_and_predict(model, train_set, collate_agqa, tc, eval_set=val_set, priors=priors,
                                          predict_sets={"val": val_set, "test": test_set})
    val_pred, test_pred = predicted["val"], predicted["test"]
    report, files = {}, {}
    if is_main_process():
        test_predictions = answer_predictions(test_table, test_pred, answers)
        val_predictions = answer_predictions(val_part, val_pred, answers)
        report = {"benchmark": "AGQA 2.0 balanced test", "backbone": "hga", "techniques": args.techniques,
                  "metrics": agqa_accuracy(test_table, test_predictions),
                  "validation": {"metrics": agqa_accuracy(val_part, val_predictions), "questions": len(val_part),
                                 "videos_held_out": config["validation"]},
                  "answer_set": {"size": len(answers), "rule": config["answer_set"],
                                 "from": "prior store" if priors is not None else "train answers"},
                  "train_questions": len(train_in), "train_questions_outside_answer_set": left_out,
                  "vocabulary": len(vocabulary), "glove": args.glove,
                  **training_report(result), "config": config}
        if left_out:
            print(f"{left_out} train question(s) answer outside the {len(answers)}-answer set and were left out of training")
        files = {"predictions.json": test_predictions, "val_predictions.json": val_predictions, "answers.json": answers,
                 "vocabulary.json": vocabulary.words}
    return write_results(args.output, report, files)


if __name__ == "__main__":
    main()
