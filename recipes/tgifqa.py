"""TGIF-QA with SpARC: train memory-attention (Cai et al., IJCAI 2020) on one task's released files
and ST-VQA's official features, evaluate on Test with the official metric.

    python recipes/tgifqa.py --task action --data DATA --priors PRIORS/action --output runs/tgifqa-action
    accelerate launch recipes/tgifqa.py --task transition --data DATA --priors PRIORS/transition --output runs/t
    python recipes/tgifqa.py --task frameqa --data DATA --priors PRIORS/frameqa --output runs/tgifqa-frameqa
    python recipes/tgifqa.py --task count --data DATA --output runs/tgifqa-count      # plain only
    python recipes/tgifqa.py --task action --smoke   # end to end on generated data, seconds

``DATA`` holds the release's ``dataset/{Train,Test}_{action,transition,count,frameqa}_question.csv``
(YunseokJANG/tgif-qa) and ``features/TGIF_RESNET_pool5.hdf5``, ``features/TGIF_C3D_fc6.hdf5`` (the
official per-frame features, keyed by the CSVs' ``key``). ``PRIORS`` is the teacher's store for the
task's train file over the run's frames (``sparc extract-priors --questions
DATA/dataset/Train_<task>_question.csv --num-frames 35``; FrameQA adds ``--answers-from`` the same
file). Validation: HCRN's seeded 10 % of the train questions. ``--techniques`` defaults to
``sparc+tgm`` for Action/Transition, ``sparc`` (+T+S) for FrameQA (word ids cannot be mixed) and
``plain`` for Count, the only one a regression can take. Hyperparameters come from
``recipes/tgifqa.json`` (shared values and a per-task entry, each with its source); flags override
them. A killed run resumes from its newest checkpoint when started again with the same
``--output``. ``OUTPUT/results.json`` holds the official numbers on Test (accuracy; FrameQA per answer
type; Count the MSE of the rounded, clamped count), the same on the validation split, the curve and
the configuration; ``OUTPUT/predictions.json`` is ``{vid_id: {"prediction", "answer"}}``, which
``sparc.metrics.tgifqa_metrics`` reads.
"""

from __future__ import annotations

import csv
from pathlib import Path

# recipes/memory_attention.py, found because python puts a script's folder on sys.path
from memory_attention import (build_model, check_techniques, cli_overrides, open_store,
                              run_answer_set, smoke_sizes, wrapped)

HERE = Path(__file__).resolve().parent
TASKS = ("action", "transition", "count", "frameqa")
KIND = {"action": "multiple_choice", "transition": "multiple_choice", "count": "count", "frameqa": "open_ended"}
DEFAULT_TECHNIQUES = {"action": "sparc+tgm", "transition": "sparc+tgm", "count": "plain", "frameqa": "sparc"}
SMOKE_FRAMES = 6
HEADERS = {"action": ["gif_name", "question", "a1", "a2", "a3", "a4", "a5", "answer", "vid_id", "key"],
           "transition": ["gif_name", "question", "a1", "a2", "a3", "a4", "a5", "answer", "vid_id", "key"],
           "count": ["gif_name", "question", "answer", "vid_id", "key"],
           "frameqa": ["gif_name", "question", "answer", "type", "vid_id", "key", "description"]}


def _smoke_rows(task: str, split: str, keys: list, g) -> list:
    """Rows of one generated file in the released columns (two questions per GIF for Transition and
    FrameQA, as there; a Transition candidate with quotes, as TRANS15831 has)."""
    verbs = ["nod", "wave hands", "smile", "jump", "turn head", "blink eyes", 'respond "no"']
    things = ["dog", "cat", "red", "two", "man", "car", "table"]
    count = {"train": 24, "test": 12}[split]
    first = {"train": 1, "test": 50001}[split]
    rows = []
    for i in range(count):
        vid = first + i
        key = keys[i // 2] if task in ("transition", "frameqa") else keys[i]
        gif = f"tumblr_smoke{key}_400"
        if task in ("action", "transition"):
            picks = g.choice(len(verbs), size=5, replace=False)
            question = "what does the man do 3 times ?" if task == "action" else "what does the girl do after smile ?"
            rows.append([gif, question, *[verbs[int(k)] for k in picks], int(g.integers(5)),
                         f"{'ACTION' if task == 'action' else 'TRANS'}{vid}", key])
        elif task == "count":
            rows.append([gif, "how many times does the cat nod ?", int(g.choice([0, 2, 3, 4, 5, 10])), f"COUNT{vid}", key])
        else:
            answer = things[int(g.integers(len(things)))] if i % 9 else f"thing{vid}"   # once only: out of set
            rows.append([gif, f"what is the {['animal', 'number', 'color', 'place'][i % 4]} near the {answer} ?", answer,
                         i % 4, f"FRAMEQA{vid}", key, f"a {answer} plays"])
    return rows


def write_smoke_data(root: Path, frames: int = SMOKE_FRAMES, seed: int = 0) -> Path:
    """A tiny TGIF-QA in the released layout: the eight tab-separated question files with every
    column, both official feature files with one dataset per key (random values; frame counts from 1
    to 14, some below the run's frames, C3D sometimes one frame longer, one C3D entry 1-D as the
    official loader allows), and a teacher store for each train file a teacher can score (Action,
    Transition over 5 candidates; FrameQA over the answers ``--answers-from`` would pick)."""
    import h5py
    import numpy as np

    from sparc.data.answer_sets import train_answer_set
    from sparc.data.tgifqa_features import C3D_FILE, RESNET_FILE
    from sparc.priors import PriorStore

    g = np.random.default_rng(seed)
    (root / "dataset").mkdir(parents=True, exist_ok=True)
    (root / "features").mkdir(exist_ok=True)
    keys = [str(k) for k in range(100, 136)]
    with h5py.File(root / "features" / RESNET_FILE, "w") as res, h5py.File(root / "features" / C3D_FILE, "w") as c3d:
        for n, key in enumerate(keys):
            frames_here = int(g.integers(2, 15))
            res[key] = g.standard_normal((frames_here, 2048), dtype=np.float32)
            c3d[key] = (g.standard_normal(4096, dtype=np.float32) if n == 7 else
                        g.standard_normal((frames_here + n % 2, 4096), dtype=np.float32))
    for task in TASKS:
        tables = {}
        for split, pool in (("train", keys[:24]), ("test", keys[24:])):
            rows = _smoke_rows(task, split, pool, g)
            with open(root / "dataset" / f"{split.title()}_{task}_question.csv", "w", newline="") as f:
                writer = csv.writer(f, delimiter="\t", lineterminator="\n")
                writer.writerow(HEADERS[task])
                writer.writerows(rows)
            tables[split] = rows
        if task == "count":
            continue
        train = tables["train"]
        header = HEADERS[task]
        qids = [f"{r[header.index('vid_id')]}_{r[header.index('key')]}" for r in train]
        if task == "frameqa":
            candidates = train_answer_set([r[2] for r in train], "sparc")
            correct = [candidates.index(r[2]) if r[2] in candidates else None for r in train]
        else:
            candidates, correct = list(range(5)), [int(r[7]) for r in train]
        probs = np.full((len(train), frames, len(candidates)), 0.1, dtype=np.float32)
        for n, a in enumerate(correct):
            if a is not None:
                probs[n, frames // 3:, a] = 3.0
        probs /= probs.sum(axis=2, keepdims=True)
        meta = {"num_frames": frames, "questions": f"Train_{task}_question.csv"}
        if task == "frameqa":
            meta["answers"] = candidates
        PriorStore.from_arrays(root / "priors" / task, qids, probs, metadata=meta)
    return root


def main(argv=None) -> dict:
    from sparc.recipe import load_config, recipe_parser, require, smoke_data, uses_priors

    p = recipe_parser(__doc__, data_help="folder with dataset/{Train,Test}_<task>_question.csv and features/TGIF_*.hdf5")
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument("--glove", help="a local GloVe text file (word_dim wide) to start the word embedding from")
    known, _ = p.parse_known_args(argv)
    p.set_defaults(techniques=DEFAULT_TECHNIQUES[known.task])
    args = p.parse_args(argv)
    task, kind = args.task, KIND[args.task]
    check_techniques(p, args.techniques, kind, f"TGIF-QA {task}")

    config = load_config(args.config or HERE / "tgifqa.json", args)
    config = cli_overrides({**{k: v for k, v in config.items() if k != "tasks"}, **config["tasks"][task]}, args)
    if args.smoke:
        smoke_sizes(config, frames=SMOKE_FRAMES)
        data = smoke_data(args, p, lambda root: write_smoke_data(root, config["frames"]), "tgifqa")
        args.data = str(data)
        if args.priors is None and kind != "count":
            args.priors = str(data / "priors" / task)
    require(args, p, ("data", "output") + (("priors",) if uses_priors(args.techniques) else ()))

    from sparc.data.tgifqa import read_tgifqa_table
    from sparc.data.tgifqa_features import (C3D_FILE, RESNET_FILE, TGIFQAFeatures, collate_tgifqa, tgifqa_vocabulary,
                                            validation_split)
    from sparc.data.words import UNK
    from sparc.metrics import tgifqa_metrics
    from sparc.recipe import check_store, train_and_predict, train_config, training_report, write_results

    data = Path(args.data)
    files = {s: data / "dataset" / f"{s}_{task}_question.csv" for s in ("Train", "Test")}
    train_table = read_tgifqa_table(files["Train"], task)
    fit_rows, val_rows = validation_split(len(train_table), **config["validation"])
    store = open_store(args.priors) if kind != "count" else None     # Count: nothing for a teacher to score
    answers, answers_from = None, None
    if kind == "open_ended":
        answers, answers_from = run_answer_set(store, config, train_table["answer"], str(files["Train"]))
    vocabulary = tgifqa_vocabulary(train_table)
    m = config["model"]
    split = lambda path, rows, drop, table=None: TGIFQAFeatures(
        path, task, data / "features" / RESNET_FILE, data / "features" / C3D_FILE, vocabulary, config["frames"],
        max_len=m["max_len_q"], answers=answers, rows=rows, drop_out_of_set=drop, table=table,
        dims=(m["appearance_dim"], m["motion_dim"]))
    train_set = split(files["Train"], fit_rows, True, train_table)
    val_set = split(files["Train"], val_rows, False, train_table)
    test_set = split(files["Test"], None, False)
    num_candidates = {"multiple_choice": 5, "open_ended": len(answers or ()), "count": 1}[kind]
    priors = store if uses_priors(args.techniques) else None
    if priors is not None:
        qids = [f"{v}_{k}" for v, k in zip(train_set.table["qid"], train_set.table["key"])]
        check_store(priors, qids, config["frames"], num_candidates, str(files["Train"]))

    model, glove_found = build_model(m, kind, m["appearance_dim"], m["motion_dim"], vocabulary, num_candidates,
                                     args.seed, args.glove)
    predict = (lambda out: out.logits.detach().float()) if kind == "count" else None   # the raw regression
    result, predicted = train_and_predict(wrapped(model, kind, num_candidates, args.techniques, config,
                                                  mask_token_id=vocabulary.index[UNK]), train_set,
                                          collate_tgifqa, train_config(args, config), eval_set=val_set,
                                          priors=priors, predict_sets={"val": val_set, "test": test_set},
                                          predict=predict)

    def official(dataset, values):
        if kind == "count":
            values = [float(v) for v in values.reshape(-1).tolist()]
        elif kind == "open_ended":
            values = [answers[int(v)] for v in values.tolist()]
        else:
            values = [int(v) for v in values.tolist()]
        return dict(zip(dataset.table["qid"], values))

    test_values, val_values = official(test_set, predicted["test"]), official(val_set, predicted["val"])
    gold = test_set.table["target"] if kind == "count" else test_set.table["answer"]
    predictions = {q: {"prediction": v, "answer": a} for (q, v), a in zip(test_values.items(), gold)}
    report = {"benchmark": f"TGIF-QA {task} test", "task": task, "backbone": "memory-attention",
              "techniques": args.techniques, "metrics": tgifqa_metrics(test_set.table, test_values, task=task),
              "val_metrics": tgifqa_metrics(val_set.table, val_values, task=task),
              "splits": {"train_file": len(train_table), "train": len(train_set), "val": len(val_set),
                         "test": len(test_set), "train_questions_dropped": len(fit_rows) - len(train_set)},
              "vocabulary": len(vocabulary), "glove_words_found": glove_found,
              **training_report(result), "config": config}
    files_out = {"predictions.json": predictions, "vocabulary.json": vocabulary.words}
    if answers is not None:
        report["answer_set"] = {"size": len(answers), "from": answers_from,
                                "test_out_of_set": sum(a not in set(answers) for a in test_set.table["answer"])}
        files_out["answers.json"] = answers
    return write_results(args.output, report, files_out)


if __name__ == "__main__":
    main()
