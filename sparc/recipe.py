"""What every benchmark recipe (``recipes/*.py``) shares: the command line, the configuration file
with its overrides, the generated ``--smoke`` data under one or several processes, the techniques
by name, the training configuration, and the results written by the main process.

A recipe reads its benchmark's files, builds its backbone and calls these; the benchmark-specific
parts (reader, model, metric) stay in the recipe.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, Optional

TECHNIQUES = ("plain", "sparc", "sparc+tgm")
#: techniques a recipe adds to its row by name (``--techniques sparc,span,attention``): STAGE's span and
#: attention supervision (TVQA+ 4.3), contrastive masking (paper 002 3.2), on adapters with their hooks.
EXTRAS = ("span", "attention", "contrastive")


def recipe_parser(doc: str, *, data_help: str, techniques: str = "sparc+tgm") -> argparse.ArgumentParser:
    """The flags every recipe takes; the recipe adds its own (``--backbone``, ``--task`` ...)."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0], epilog="\n\n".join(doc.split("\n\n")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help=data_help)
    p.add_argument("--priors", help="the teacher's prior store for the train split (sparc extract-priors)")
    p.add_argument("--output", help="run folder: checkpoints, logs, results.json")
    p.add_argument("--techniques", default=techniques, type=_techniques_flag,
                   help=f"plain, sparc (+T+S) or sparc+tgm (+T+S+TGM), optionally followed by any of "
                        f"{', '.join(EXTRAS)} (comma-separated: sparc,span,attention); default {techniques}")
    p.add_argument("--config", default=None, help="hyperparameters (default: the JSON beside the recipe)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--max-steps", type=int, help="stop after N optimizer steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--smoke", action="store_true", help="generate a tiny dataset in the released layout and run on it")
    return p


def add_pretrain_arguments(p: argparse.ArgumentParser) -> None:
    """``--pretrain-epochs`` of the recipes with a question-prediction stage (TVQA, TVQA+, DramaQA)."""
    p.add_argument("--pretrain-epochs", type=int,
                   help="epochs of the question-prediction pretraining stage (paper 002 3.2) into OUTPUT/pretrain/ "
                        "before the main stage, which starts from its weights; 0 skips it (default: the "
                        "configuration's pretrain.epochs); --max-steps caps the main stage only")


def pretrain_settings(args, config: dict) -> tuple:
    """``(epochs, lr)`` of the pretraining stage: ``--pretrain-epochs`` over the configuration's ``pretrain``
    (none there: no stage; its lr defaults to the main stage's)."""
    settings = config.get("pretrain") or {"epochs": 0}
    epochs = settings["epochs"] if args.pretrain_epochs is None else args.pretrain_epochs
    if epochs < 0:
        raise ValueError(f"--pretrain-epochs {epochs}: a count of epochs, 0 to skip the stage (field: pretrain.epochs)")
    return int(epochs), float(settings.get("lr", config["lr"]))


def question_prediction_stage(args, config: dict, train_set, val_set, build: Callable, backbone, adapter,
                              collate) -> dict:
    """Paper 002's question-prediction stage before the main one (TVQA, TVQA+, DramaQA):
    ``QuestionPrediction`` over the train and val splits (C = 5 candidates, the clip's own question among
    other clips' questions, the answer masked as the split's reader masks it), trained from ``build()``
    with the plain answer loss into ``OUTPUT/pretrain/`` (:func:`pretrain_settings` epochs and lr, the
    main stage's batch, decay and clipping), then its weights loaded into the main stage's fresh
    ``backbone``. A finished stage is reused; a resumed main stage continues from its own checkpoint.
    Returns the report's ``pretraining`` and ``main_stage_start``."""
    from sparc.data.question_prediction import QuestionPrediction
    from sparc.pretraining import pretrain, start_main_stage

    epochs, lr = pretrain_settings(args, config)
    described = {}

    def make_sets():
        train_qp = QuestionPrediction(train_set, seed=args.seed)
        described.update(transform=train_qp.summary())
        return train_qp, QuestionPrediction(val_set, seed=args.seed)

    stage = pretrain(args.output, build, adapter, make_sets, collate, train_config(args, config), epochs=epochs,
                     lr=lr, describe=described)
    return {"pretraining": stage.summary, "main_stage_start": start_main_stage(args.output, backbone, stage)}


def load_config(path, args) -> dict:
    """The recipe's JSON configuration with ``--epochs``, ``--batch-size`` and ``--lr`` applied."""
    config = json.loads(Path(path).read_text())
    for key, value in (("epochs", args.epochs), ("batch_size", args.batch_size), ("lr", args.lr)):
        if value is not None:
            config[key] = value
    return config


def smoke_data(args, parser: argparse.ArgumentParser, write: Callable[[Path], object], name: str) -> Path:
    """The folder of generated data for ``--smoke``: ``OUTPUT/smoke-data``, written once by the first
    process (``write(folder)``) while the others wait for it; without ``--output`` a temporary run
    folder (one process only). Sets ``args.output`` and ``args.num_workers = 0``."""
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    if args.output is None:
        if processes > 1:
            parser.error("--smoke on several processes needs --output (a folder they share)")
        args.output = tempfile.mkdtemp(prefix=f"sparc-{name}-smoke-")
    data = Path(args.output) / "smoke-data"
    ready = data / "READY"
    if int(os.environ.get("RANK", "0")) == 0:
        if not ready.exists():
            write(data)
            ready.write_text("ok\n")
    else:   # the other processes wait for the first (before any process group exists)
        for _ in range(1200):
            if ready.exists():
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"{data}: the first process did not finish writing the smoke data")
    args.num_workers = 0
    return data


def build_once(path: Path, build: Callable[[Path], object], what: str, wait_s: float = 7200.0) -> Path:
    """``path`` built by the first process (``build(path)`` writes it atomically) while the others wait
    for it (before any process group exists, as :func:`smoke_data`'s files): files every process reads
    and none may write at the same time as another."""
    path = Path(path)
    if int(os.environ.get("RANK", "0")) == 0:
        if not path.exists():
            build(path)
        return path
    deadline = time.time() + wait_s
    while not path.exists():
        if time.time() > deadline:
            raise RuntimeError(f"{path}: the first process did not finish {what}")
        time.sleep(0.5)
    return path


def require(args, parser: argparse.ArgumentParser, names) -> None:
    """An argparse error for the first of ``names`` left unset (and not filled in by ``--smoke``)."""
    missing = [n for n in names if getattr(args, n) is None]
    if missing:
        parser.error(f"--{missing[0].replace('_', '-')} is required (or --smoke)")


def technique_spec(value: str) -> str:
    """``--techniques``' value checked and written in one order: a row of SpARC's comparison
    (:data:`TECHNIQUES`, ``plain`` when left out) then the :data:`EXTRAS` it names, comma-separated."""
    names = [n.strip() for n in str(value).split(",") if n.strip()]
    presets = [n for n in names if n in TECHNIQUES]
    unknown = [n for n in names if n not in TECHNIQUES and n not in EXTRAS]
    if unknown or not names:
        raise ValueError(f"techniques: {', '.join(unknown) or repr(value)} is not one of {TECHNIQUES} or {EXTRAS}")
    if len(presets) > 1 or len(set(names)) < len(names):
        raise ValueError(f"techniques {value!r}: at most one of {TECHNIQUES}, each name once")
    extras = [n for n in EXTRAS if n in names]
    return ",".join((presets or ["plain"])[:1] + extras)


def _techniques_flag(value: str) -> str:
    try:
        return technique_spec(value)
    except ValueError as e:            # argparse prints an ArgumentTypeError's own message
        raise argparse.ArgumentTypeError(str(e)) from None


def sparc_preset(spec: str) -> str:
    """The SpARC row of a ``--techniques`` value: ``plain``, ``sparc`` or ``sparc+tgm``."""
    return technique_spec(spec).split(",")[0]


def uses_priors(spec: str) -> bool:
    """Whether a ``--techniques`` value reads the teacher's priors (every SpARC row but ``plain``)."""
    return sparc_preset(spec) != "plain"


def sparc_techniques(spec: str, config: dict, text_width: Optional[int] = None) -> list:
    """The techniques of ``spec`` (``--techniques``): the SpARC row (``plain`` none, ``sparc``
    TemporalGuidance + SpatialDistillation (+T+S), ``sparc+tgm`` with TemporalGuidedMixup, the paper's
    full method) with ``config``'s threshold, weights and mixup parameters, then the extras:
    ``span`` SpanSupervision(``ts_weight``), ``attention`` AttentionSupervision(``att_weight``, and
    ``attention``'s {alpha, num_negatives, hard_negatives}), ``contrastive`` ContrastiveMasking(the
    configuration's ``contrastive`` {weight, prob}) with a mask vector ``text_width`` wide for an adapter
    whose text is features (dropped for token ids)."""
    import sparc

    names = technique_spec(spec).split(",")
    made = []
    if names[0] != "plain":
        made += [sparc.TemporalGuidance(threshold=config["threshold"], consistency_weight=config["consistency_weight"]),
                 sparc.SpatialDistillation(weight=config["spatial_weight"])]
    if names[0] == "sparc+tgm":
        mixup = config.get("mixup")
        if not mixup:
            raise ValueError("sparc+tgm needs the configuration's mixup {alpha, beta}; this benchmark's paper "
                             "trains without augmentation (use --techniques sparc)")
        made.append(sparc.TemporalGuidedMixup(alpha=mixup["alpha"], beta=mixup.get("beta", mixup["alpha"])))
    # Defaults: STAGE's weights (TVQA+ 4.3) and paper 002's (4.1), as the technique registry's.
    if "span" in names:
        made.append(sparc.SpanSupervision(weight=config.get("ts_weight", 0.5)))
    if "attention" in names:
        made.append(sparc.AttentionSupervision(weight=config.get("att_weight", 0.1), **config.get("attention", {})))
    if "contrastive" in names:
        made.append(sparc.ContrastiveMasking(**{"weight": 0.1, "prob": 0.2, **config.get("contrastive", {})},
                                             feature_dim=text_width or 768))
    return made


def train_config(args, config: dict):
    """``TrainConfig`` from the configuration (``weight_decay``, ``max_grad_norm``,
    ``early_stopping_patience``, ``keep_best`` when it has them)."""
    from sparc.train import TrainConfig

    return TrainConfig(epochs=config["epochs"], batch_size=config["batch_size"],
                       eval_batch_size=config.get("eval_batch_size", config["batch_size"]), lr=config["lr"],
                       weight_decay=config.get("weight_decay", 0.0), max_grad_norm=config.get("max_grad_norm"),
                       seed=args.seed, output_dir=args.output, num_workers=args.num_workers,
                       max_steps=args.max_steps, progress=not args.smoke, log_with=None if args.smoke else "auto",
                       early_stopping_patience=config.get("early_stopping_patience"),
                       keep_best=config.get("keep_best", False))


def training_report(result) -> dict:
    """What a results.json says of the training: the evaluations per epoch, the optimizer steps, and each
    loss term's mean over this run's steps (weighted, as the step adds them; empty for a finished run
    started again)."""
    names = dict.fromkeys(name for step in result.terms for name in step)
    terms = {name: sum(step[name] for step in result.terms if name in step) /
             sum(1 for step in result.terms if name in step) for name in names}
    return {"eval_history": result.eval_history, "global_step": result.global_step, "loss_terms": terms}


def train_and_predict(model, train_set, collate, config, *, eval_set, priors, predict_sets: Dict[str, object],
                      predict=None):
    """Train (``sparc.train.train``, evaluating ``eval_set`` after every epoch), then the final model's
    predictions on each of ``predict_sets`` (``{name: dataset}``), in each dataset's order, gathered
    across processes; ``eval_set`` itself reuses the training's last evaluation. A finished run started
    again trains no further and predicts from its last checkpoint."""
    from torch.utils.data import DataLoader

    from sparc.train import evaluate, make_accelerator, predict_answer, probe_ddp_kwargs, train

    predict = predict or predict_answer
    qid_field = getattr(getattr(model, "adapter", None), "qid_field", "qid")
    accelerator = make_accelerator(config, probe_ddp_kwargs(model, train_set, collate, config, priors, qid_field))
    result = train(model, train_set, collate, config, eval_set=eval_set, priors=priors, accelerator=accelerator,
                   predict=predict)
    out = {}
    for name, dataset in predict_sets.items():
        if dataset is eval_set and result.predictions is not None:
            out[name] = result.predictions
            continue
        loader = accelerator.prepare(DataLoader(dataset, batch_size=config.eval_batch_size, shuffle=False,
                                                collate_fn=collate, num_workers=config.num_workers))
        answer_field = getattr(getattr(model, "adapter", None), "answer_field", "answer")
        out[name] = evaluate(accelerator, model, loader, answer_field, predict=predict)[1]
    return result, out


def check_store(store, qids, num_frames: int, num_candidates: int, train_file) -> None:
    """Before training: the store's frames and candidates are the run's, and it holds every training
    question (a missing one would otherwise stop the run in the middle of an epoch)."""
    if store.num_frames != num_frames:
        raise ValueError(f"prior store {store.path} has priors over {store.num_frames} frames but the run samples "
                         f"{num_frames} (config 'frames'); extract with --num-frames {num_frames} (field: num_frames)")
    if store.num_candidates != num_candidates:
        raise ValueError(f"prior store {store.path} has {store.num_candidates} candidates per question, the model "
                         f"scores {num_candidates} (field: num_candidates)")
    qids = list(qids)
    missing = [q for q in qids if q not in store]
    if missing:
        raise ValueError(f"prior store {store.path} has no priors for {len(missing)} of the {len(qids)} training "
                         f"questions of {train_file}, e.g. qid {missing[0]} (extract-priors over the whole train "
                         f"split, without --skip-missing) (field: qid)")


def open_priors(args):
    """The train split's prior store, or None for ``--techniques plain``."""
    from sparc.priors import PriorStore

    return PriorStore.open(args.priors) if args.techniques != "plain" else None


def model_grounding(model, dataset, collate, truth: dict, keys, thresholds=(0.3, 0.5, 0.7), groups=None,
                    batch_size: int = 32) -> dict:
    """NExT-GQA-style grounding of a trained wrapped model's own frames: per question with a human span
    in ``truth`` (``sparc.grounding.read_nextgqa``), each frame's score is the model's probability of its
    answer from that frame alone (``sparc.frame_scores``); the frames above each threshold give the
    span. ``keys[i]`` is dataset item ``i``'s key in ``truth``; ``groups`` ``{name: keys}`` (e.g. by type)."""
    import torch

    from sparc.frame_scores import single_frame_scores
    from sparc.grounding import score_grounding

    chosen = [i for i, key in enumerate(keys) if key in truth]
    if not chosen:
        raise ValueError("no evaluated question has a ground-truth span (check the keys: video_qid)")
    device = next(model.parameters()).device
    scores = {}
    for start in range(0, len(chosen), batch_size):
        rows = chosen[start:start + batch_size]
        batch = collate([dataset[i] for i in rows])
        batch = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
        frame_scores, valid, _ = single_frame_scores(model, batch)
        for i, s, v in zip(rows, frame_scores.cpu(), valid.cpu()):
            scores[keys[i]] = s[v].numpy()
    groups = {k: kept for k, g in (groups or {}).items() if (kept := [q for q in g if q in scores])}
    return {"questions": len(scores), "frame_score": "the model's answer probability from each frame alone",
            "rows": score_grounding(scores, truth, thresholds, groups)}


def is_main_process() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process


def machine() -> Dict[str, str]:
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform()}


def write_results(output, report: dict, files: Optional[Dict[str, object]] = None) -> dict:
    """On the main process: ``OUTPUT/results.json`` (``report`` with the process count, command and
    machine added)
    and each of ``files`` (``{name: JSON value}``, e.g. the official-layout predictions); prints the
    metrics. Every process then leaves the process group. Returns the report ({} elsewhere)."""
    from sparc.distributed import end_process_group

    from accelerate import PartialState

    written = {}
    if is_main_process():
        written = {**report, "processes": PartialState().num_processes, "command": sys.argv, "machine": machine()}
        os.makedirs(output, exist_ok=True)
        for name, value in (files or {}).items():
            with open(Path(output) / name, "w") as f:
                json.dump(value, f)
        with open(Path(output) / "results.json", "w") as f:
            json.dump(written, f, indent=1)
        print(json.dumps(written.get("metrics", {}), indent=1))
        print(f"wrote {Path(output) / 'results.json'}")
    end_process_group()
    return written


__all__ = ["TECHNIQUES", "build_once", "EXTRAS", "technique_spec", "sparc_preset", "uses_priors", "recipe_parser", "add_pretrain_arguments", "pretrain_settings", "question_prediction_stage", "load_config", "smoke_data", "require", "sparc_techniques", "train_config", "training_report",
           "train_and_predict", "check_store", "open_priors", "model_grounding", "is_main_process", "machine", "write_results"]
