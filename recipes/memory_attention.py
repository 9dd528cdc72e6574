"""What the memory-attention recipes share (``tgifqa.py``, ``msvdqa.py``, ``msrvttqa.py``): the model
(Cai et al., IJCAI 2020, ``sparc.adapters.MemoryAttention`` over word ids, GloVe optional), the
answer set of an open-ended run, the start-time checks of a prior store, the techniques a task
allows, training with a validation curve followed by predictions on val and test, and the MSVD-QA /
MSRVTT-QA recipe itself (both datasets differ only in their files' video ids and the configuration).

Not a recipe: the scripts beside it import it (``python recipes/x.py`` puts ``recipes/`` on the path).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence, Tuple

HERE = Path(__file__).resolve().parent

#: the techniques each kind of task can take (``--techniques``), and the default
TECHNIQUES_FOR = {"multiple_choice": ("plain", "sparc", "sparc+tgm"), "open_ended": ("plain", "sparc"),
                  "count": ("plain",)}
WHY_NOT = {
    "open_ended": "the questions are word ids: TemporalGuidedMixup mixes an open-ended batch by interpolating "
                  "the question fields, and ids cannot be interpolated (MemoryAdapter); use --techniques sparc "
                  "(+T+S) or plain",
    "count": "TGIF-QA Count is a regression: TemporalGuidance, SpatialDistillation and the mixups need the "
             "teacher's distribution over answers, and a count question has no candidates for the teacher to "
             "score (sparc extract-priors refuses Count files); use --techniques plain (the paper's L2 loss)",
}


def check_techniques(parser, techniques: str, kind: str, what: str) -> None:
    """A clear argparse error at start for techniques the task cannot take."""
    from sparc.recipe import sparc_preset

    if sparc_preset(techniques) not in TECHNIQUES_FOR[kind]:
        parser.error(f"--techniques {techniques} is not available for {what}: {WHY_NOT[kind]}")


def cli_overrides(config: dict, args) -> dict:
    """``--epochs``, ``--batch-size``, ``--lr`` over a configuration (again, after a per-task merge)."""
    for key, value in (("epochs", args.epochs), ("batch_size", args.batch_size), ("lr", args.lr)):
        if value is not None:
            config[key] = value
    return config


def smoke_sizes(config: dict, frames: int) -> dict:
    """Small everything for ``--smoke``: the pipeline, not the numbers."""
    config.update(epochs=2, batch_size=8, frames=frames)
    config["model"] = dict(config["model"], hidden=8, word_dim=8, video_slots=3, text_slots=2)
    return config


def build_model(model_config: dict, kind: str, appearance_dim: int, motion_dim: int, vocabulary,
                num_answers: int, seed: int, glove: Optional[str] = None):
    """``(MemoryAttention, GloVe words found or None)``: word ids over ``vocabulary``; with ``glove`` (a
    local GloVe text file of ``word_dim`` wide vectors) the embedding starts from it (paper 003, 3.1)."""
    import torch

    from sparc.adapters import MemoryAttention
    from sparc.data.words import glove_matrix

    m = model_config
    embed, found = None, None
    if glove:
        embed, found = glove_matrix(vocabulary, glove, dim=m["word_dim"], seed=seed)
    torch.manual_seed(seed)
    model = MemoryAttention(appearance_dim, motion_dim, hidden_size=m["hidden"], word_dim=m["word_dim"],
                            video_memory_size=m["video_slots"], text_memory_size=m["text_slots"],
                            max_len_q=m["max_len_q"], task=kind, num_answers=max(num_answers, 1), use_bert=False,
                            vocab_size=len(vocabulary), glove_embed=embed, dropout=m["dropout"],
                            activation=m["activation"])
    return model, found


def open_store(path: Optional[str]):
    from sparc.priors import PriorStore

    return None if path is None else PriorStore.open(path)


def run_answer_set(store, config: dict, train_answers: Sequence[str], train_file: str) -> Tuple[list, str]:
    """``(answers, where from)``: the prior store's own list whenever a store is given (also for
    ``--techniques plain``, so that the rows of a comparison score the same classes), else the
    configuration's rule over the train answers."""
    from sparc.data.answer_sets import answer_set_from_config, store_answer_set

    if store is not None:
        return store_answer_set(store, train_answers, train_file), f"prior store {store.path} (metadata 'answers')"
    return answer_set_from_config(train_answers, config["answer_set"]), f"{train_file}, rule {config['answer_set']}"


def wrapped(model, kind: str, num_answers: int, techniques: str, config: dict, mask_token_id=None):
    """The model wrapped with the row's techniques and the paper's task loss (3.4: hinge for multiple
    choice, cross-entropy for open-ended, L2 for Count; with TemporalGuidance the answer loss is its
    guided cross-entropy, SpARC 3.2.1). ``mask_token_id``: the word id contrastive masking writes into
    the hypotheses (multiple choice)."""
    import sparc
    from sparc.adapters import MemoryAdapter
    from sparc.adapters.memory import task_loss_for
    from sparc.recipe import sparc_techniques

    adapter = MemoryAdapter(kind, num_answers=num_answers if kind == "open_ended" else None,
                            mask_token_id=mask_token_id if kind == "multiple_choice" else None)
    return sparc.wrap(model, adapter, sparc_techniques(techniques, config), task_loss=task_loss_for(kind))


# --------------------------------------------------------------------------- MSVD-QA / MSRVTT-QA

NAMES = {"msvd": "MSVD-QA", "msrvtt": "MSRVTT-QA"}


def write_msqa_smoke(root: Path, dataset: str, frames: int) -> Path:
    """A tiny MSVD-QA / MSRVTT-QA in Xu et al.'s layout: ``{train,val,test}_qa.json`` (``answer, id,
    question, video_id``; MSRVTT adds ``category_id``), ``video_feature_20.h5`` with ``/vgg`` and ``/c3d``
    ``(videos, 20, 4096)`` indexed as the dataset indexes them (MSVD ``video_id - 1``), and a prior store
    for train over ``frames`` frames and the answers ``sparc extract-priors --answers-from`` would pick."""
    import h5py
    import numpy as np

    from sparc.data.answer_sets import train_answer_set
    from sparc.data.msqa_features import VIDEO_ID_BASE
    from sparc.priors import PriorStore

    g = np.random.default_rng(1 if dataset == "msvd" else 2)
    root.mkdir(parents=True, exist_ok=True)
    base = VIDEO_ID_BASE[dataset]
    words = ["what", "who", "how", "when", "where"]
    answers = ["man", "woman", "dog", "ball", "car", "guitar"]
    splits = {"train": (24, range(0, 4)), "val": (8, range(4, 6)), "test": (12, range(6, 10))}
    qid, entries = 0, {}
    for split, (count, videos) in splits.items():
        rows = []
        for i in range(count):
            answer = answers[int(g.integers(len(answers)))] if i % 7 else f"thing{qid}"   # once only: out of set
            entry = {"answer": answer, "id": qid, "question": f"{words[i % 5]} is playing the {answer} {i}?",
                     "video_id": base + videos[i % len(videos)]}
            if dataset == "msrvtt":
                entry["category_id"] = int(g.integers(20))
            rows.append(entry)
            qid += 1
        entries[split] = rows
        (root / f"{split}_qa.json").write_text(json.dumps(rows))
    with h5py.File(root / "video_feature_20.h5", "w") as f:
        f["vgg"] = g.standard_normal((10, 20, 4096), dtype=np.float32)
        f["c3d"] = g.standard_normal((10, 20, 4096), dtype=np.float32)
    store_answers = train_answer_set([e["answer"] for e in entries["train"]], "sparc")
    probs = np.full((len(entries["train"]), frames, len(store_answers)), 0.1, dtype=np.float32)
    for n, e in enumerate(entries["train"]):
        if e["answer"] in store_answers:
            probs[n, frames // 3:, store_answers.index(e["answer"])] = 3.0
    probs /= probs.sum(axis=2, keepdims=True)
    PriorStore.from_arrays(root / "priors-train", [str(e["id"]) for e in entries["train"]], probs,
                           metadata={"answers": store_answers, "num_frames": frames, "questions": "train_qa.json"})
    return root


def msqa_main(dataset: str, doc: str, argv=None) -> dict:
    from sparc.recipe import load_config, recipe_parser, require, smoke_data, uses_priors

    name = NAMES[dataset]
    p = recipe_parser(doc, data_help=f"folder with {name}'s {{train,val,test}}_qa.json and video_feature_20.h5",
                      techniques="sparc")
    p.add_argument("--glove", help="a local GloVe text file (word_dim wide) to start the word embedding from")
    args = p.parse_args(argv)
    check_techniques(p, args.techniques, "open_ended", name)
    config = load_config(args.config or HERE / f"{dataset}qa.json", args)
    if args.smoke:
        smoke_sizes(config, frames=5)
        data = smoke_data(args, p, lambda root: write_msqa_smoke(root, dataset, config["frames"]), f"{dataset}qa")
        args.data = str(data)
        if args.priors is None:
            args.priors = str(data / "priors-train")
    require(args, p, ("data", "output") + (("priors",) if uses_priors(args.techniques) else ()))

    from sparc.data.msqa import read_msqa_table
    from sparc.data.msqa_features import FEATURE_FILE, MSQAFeatures, collate_msqa, msqa_vocabulary
    from sparc.metrics import msqa_accuracy
    from sparc.recipe import check_store, train_and_predict, train_config, training_report, write_results

    data = Path(args.data)
    files = {split: data / f"{split}_qa.json" for split in ("train", "val", "test")}
    train_table = read_msqa_table(files["train"])
    store = open_store(args.priors)
    answers, answers_from = run_answer_set(store, config, train_table["answer"], str(files["train"]))
    vocabulary = msqa_vocabulary(train_table)
    m = config["model"]
    split = lambda s, drop, table=None: MSQAFeatures(files[s], data / FEATURE_FILE, dataset, vocabulary, answers,
                                                     num_frames=config["frames"], max_len=m["max_len_q"],
                                                     drop_out_of_set=drop, table=table)
    train_set, val_set, test_set = split("train", True, train_table), split("val", False), split("test", False)
    priors = store if uses_priors(args.techniques) else None
    if priors is not None:
        check_store(priors, train_set.table["qid"], config["frames"], len(answers), str(files["train"]))
    model, glove_found = build_model(m, "open_ended", train_set.appearance_dim, train_set.motion_dim, vocabulary,
                                     len(answers), args.seed, args.glove)
    result, predicted = train_and_predict(wrapped(model, "open_ended", len(answers), args.techniques, config),
                                          train_set, collate_msqa, train_config(args, config), eval_set=val_set,
                                          priors=priors, predict_sets={"val": val_set, "test": test_set})
    words = {s: [answers[int(i)] for i in predicted[s].tolist()] for s in ("val", "test")}
    predictions = {q: {"prediction": w, "answer": a}
                   for q, w, a in zip(test_set.table["qid"], words["test"], test_set.table["answer"])}
    report = {"benchmark": f"{name} test", "backbone": "memory-attention", "techniques": args.techniques,
              "metrics": msqa_accuracy(test_set.table, dict(zip(test_set.table["qid"], words["test"]))),
              "val_metrics": msqa_accuracy(val_set.table, dict(zip(val_set.table["qid"], words["val"]))),
              "answer_set": {"size": len(answers), "from": answers_from,
                             "train_questions": len(train_set), "train_questions_dropped": len(train_table) - len(train_set),
                             "test_out_of_set": sum(a not in set(answers) for a in test_set.table["answer"])},
              "vocabulary": len(vocabulary), "glove_words_found": glove_found,
              **training_report(result), "config": config}
    return write_results(args.output, report, {"predictions.json": predictions, "answers.json": answers,
                                               "vocabulary.json": vocabulary.words})


__all__ = ["check_techniques", "cli_overrides", "smoke_sizes", "build_model", "open_store", "run_answer_set",
           "wrapped", "write_msqa_smoke", "msqa_main", "TECHNIQUES_FOR"]
