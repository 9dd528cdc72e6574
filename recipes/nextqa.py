"""NExT-QA with SpARC: train HGA or VGT on the released features, evaluate with the official metric.

    python recipes/nextqa.py --data DATA --priors PRIORS/train --output runs/nextqa-hga
    accelerate launch recipes/nextqa.py --data DATA --priors PRIORS/train --output runs/nextqa-hga
    python recipes/nextqa.py --backbone vgt --bert BERT_DIR --data DATA --priors PRIORS/train --output runs/nextqa-vgt
    python recipes/nextqa.py --smoke [--backbone vgt]  # end to end on generated data, under a minute

``DATA`` holds ``nextqa/{train,val}.csv`` and the features the backbone's public code reads: for HGA
(doc-doc/NExT-QA) ``vid_feat/app_mot_{split}.h5`` and ``qas_bert/bert_ft_{split}.h5``; for VGT
(sail-sg/VGT) ``region_feat_n/acregion_8c20b_{split}.h5`` and ``frame_feat/app_feat_{split}.h5``, with
``BERT_DIR`` a local BERT (config, weights, vocab.txt). ``PRIORS`` is the teacher's store for the
train split, over the backbone's frames (``sparc extract-priors``, docs/teachers.md). Hyperparameters
come from ``recipes/nextqa_{backbone}.json`` (each with its source); flags override them. A killed run resumes from its
newest checkpoint when started again with the same ``--output``. The results (the official
``eval_mc.py`` numbers on val, the training curve, the configuration) go to ``OUTPUT/results.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from sparc.recipe import (is_main_process, load_config, model_grounding, open_priors, recipe_parser, require,
                          smoke_data, sparc_techniques, train_config, training_report, write_results)

HERE = Path(__file__).resolve().parent


def build_hga(model_config: dict, seed: int):
    from sparc.adapters.hga import HGA, EncoderQns, EncoderVidHGA

    torch.manual_seed(seed)
    m = model_config
    vid = EncoderVidHGA(dim_vid=m["dim_vid"], dim_hidden=m["hidden"], input_dropout_p=m["dropout"])
    qns = EncoderQns(dim_embed=m["word_dim"], dim_hidden=m["hidden"], vocab_size=1, glove_embed=None, use_bert=True,
                     input_dropout_p=m["dropout"])
    return HGA(vid, qns, block_kwargs=dict(m["block"]))


def build_vgt(model_config: dict, seed: int, bert, vocab_size: int):
    from sparc.adapters.vgt import VGT

    torch.manual_seed(seed)
    m = model_config
    return VGT(bert_tokenizer=vocab_size, feature_dim=m["feature_dim"], N=m["N"], h=m["h"], d_model=m["d_model"],
               d_ff=m["d_ff"], dropout=m["dropout"], Q=0, T=32, vocab_size=vocab_size, bnum=m["bnum"],
               dataset="nextqa", bert_config=bert)


def write_smoke_data(root: Path, questions: int = 24, videos: int = 6, seed: int = 0) -> Path:
    """A tiny NExT-QA in the released layouts: CSVs with every column, both backbones' features in the
    real keys and shapes (random values), a tiny local BERT for VGT, and teacher stores for train whose
    priors favour the middle frames (16 for HGA's clips, 8 for VGT's)."""
    import h5py
    import numpy as np

    from sparc.priors import PriorStore

    g = np.random.default_rng(seed)
    types = ["CW", "CH", "TN", "TC", "TP", "DC", "DL", "DO"]
    (root / "nextqa").mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        vids = [str(4000000000 + (0 if split == "train" else 100) + v) for v in range(videos)]
        rows = [(vids[i % videos], str(i), types[i % len(types)], int(g.integers(5))) for i in range(questions)]
        lines = ["video,frame_count,width,height,question,answer,qid,type,a0,a1,a2,a3,a4"]
        lines += [f"{v},300,640,480,what happens {q},{a},{q},{t},a,b,c,d,e" for v, q, t, a in rows]
        (root / "nextqa" / f"{split}.csv").write_text("\n".join(lines) + "\n")
        (root / "vid_feat").mkdir(exist_ok=True)
        with h5py.File(root / "vid_feat" / f"app_mot_{split}.h5", "w") as f:
            f["ids"] = np.array([int(v) for v in vids])
            f["feat"] = g.standard_normal((videos, 16, 4096), dtype=np.float32)
        (root / "qas_bert").mkdir(exist_ok=True)
        qas = g.standard_normal((questions, 5, 37, 768), dtype=np.float32)
        qas[:, :, 30:] = 0.0
        with h5py.File(root / "qas_bert" / f"bert_ft_{split}.h5", "w") as f:
            f["feat"] = qas
        (root / "region_feat_n").mkdir(exist_ok=True)
        with h5py.File(root / "region_feat_n" / f"acregion_8c20b_{split}.h5", "w") as f:
            f["ids"] = np.array([int(v) for v in vids])
            f["feat"] = g.standard_normal((videos, 8, 4, 20, 2048), dtype=np.float32)
            corners = np.sort(g.uniform(0, 400, size=(videos, 8, 4, 20, 4)), axis=-1)
            f["bbox"] = corners[..., [0, 2, 1, 3]]                     # x1 <= x2, y1 <= y2
        (root / "frame_feat").mkdir(exist_ok=True)
        with h5py.File(root / "frame_feat" / f"app_feat_{split}.h5", "w") as f:
            f["ids"] = np.array([int(v) for v in vids])
            f["resnet_features"] = g.standard_normal((videos, 8, 4, 2048), dtype=np.float32)
        if split == "val":   # NExT-GQA's layout: human spans for the causal and temporal questions
            gsub = {}
            for v, q, t, _ in rows:
                if t[0] in "CT":
                    start = float(g.uniform(0, 20))
                    entry = gsub.setdefault(v, {"duration": 30.0, "fps": 10.0, "location": {}})
                    entry["location"][q] = [[start, start + float(g.uniform(2, 10))]]
            (root / "gsub_val.json").write_text(json.dumps(gsub))
        if split == "train":
            for name, T in (("priors-train", 16), ("priors-train-vgt", 8)):
                probs = np.full((questions, T, 5), 0.1 / 4, dtype=np.float32)
                for n, (_, _, _, a) in enumerate(rows):
                    probs[n, :, a] = 0.3
                    probs[n, T // 4:T // 2, a] = 0.9
                    probs[n] /= probs[n].sum(axis=1, keepdims=True)
                PriorStore.from_arrays(root / name, [f"{v}_{q}" for v, q, _, _ in rows], probs)
    bert = root / "bert"
    bert.mkdir(exist_ok=True)
    words = ["what", "happens", "a", "b", "c", "d", "e"] + [str(i) for i in range(questions)]
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    (bert / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (bert / "config.json").write_text(json.dumps({"model_type": "bert", "vocab_size": len(vocab), "hidden_size": 16,
                                                  "num_hidden_layers": 1, "num_attention_heads": 2,
                                                  "intermediate_size": 16, "max_position_embeddings": 64}))
    return root


def main(argv=None) -> dict:
    p = recipe_parser(__doc__, data_help="folder with nextqa/{train,val}.csv and the backbone's features")
    p.add_argument("--backbone", default="hga", choices=("hga", "vgt"))
    p.add_argument("--bert", help="VGT: a local BERT directory (config.json, weights, vocab.txt)")
    p.add_argument("--grounding", help="NExT-GQA's gsub_val.json: also score the trained model's frames against its spans")
    args = p.parse_args(argv)

    config = load_config(args.config or HERE / f"nextqa_{args.backbone}.json", args)
    if args.smoke:   # small everything: the pipeline, not the numbers
        data = smoke_data(args, p, write_smoke_data, "nextqa")
        args.data, args.bert = str(data), str(data / "bert")
        args.grounding = str(data / "gsub_val.json")
        args.priors = str(data / ("priors-train" if args.backbone == "hga" else "priors-train-vgt"))
        config.update(epochs=2, batch_size=8)
        if args.backbone == "hga":
            config["model"] = dict(config["model"], hidden=8, word_dim=8, block={"mm_dim": 8, "chunks": 2, "rank": 2})
        else:
            config["model"] = dict(config["model"], h=2, d_model=16, d_ff=16, dropout=0.0)
    require(args, p, ("data", "priors", "output") + (("bert",) if args.backbone == "vgt" else ()))

    import sparc
    from sparc.adapters import HGAAdapter, VGTAdapter
    from sparc.metrics import nextqa_accuracy
    from sparc.train import train

    data = Path(args.data)
    tables = Path(args.output) / "tables"     # the CSVs as Arrow tables, cached beside the run
    if args.backbone == "hga":
        from sparc.data.nextqa import NExTQA, collate_nextqa as collate

        split = lambda name: NExTQA(data / "nextqa" / f"{name}.csv", data / "vid_feat" / f"app_mot_{name}.h5",
                                    data / "qas_bert" / f"bert_ft_{name}.h5", cache_dir=tables / name)
        backbone, adapter = build_hga(config["model"], args.seed), HGAAdapter()
    else:
        from transformers import BertTokenizer

        from sparc.data.nextqa_vgt import NExTQAVGT, collate_nextqa_vgt as collate

        tokenizer = BertTokenizer.from_pretrained(args.bert, local_files_only=True)
        split = lambda name: NExTQAVGT(data / "nextqa" / f"{name}.csv",
                                       data / "region_feat_n" / f"acregion_8c20b_{name}.h5",
                                       data / "frame_feat" / f"app_feat_{name}.h5", tokenizer,
                                       amax_words=config["model"]["amax_words"], bnum=config["model"]["bnum"],
                                       cache_dir=tables / name)
        backbone, adapter = build_vgt(config["model"], args.seed, args.bert, len(tokenizer)), VGTAdapter()
    train_set, val_set = split("train"), split("val")
    model = sparc.wrap(backbone, adapter, sparc_techniques(args.techniques, config))
    result = train(model, train_set, collate, train_config(args, config), eval_set=val_set, priors=open_priors(args))

    predictions = {key: {"prediction": int(pred), "answer": int(answer)}
                   for key, pred, answer in zip(val_set.table["key"], result.predictions.tolist(), val_set.table["answer"])}
    report = {"benchmark": "NExT-QA val", "backbone": args.backbone, "techniques": args.techniques,
              "metrics": nextqa_accuracy(data / "nextqa" / "val.csv", predictions),
              **training_report(result), "config": config}
    if args.grounding and is_main_process():
        from sparc.grounding import read_nextgqa

        keys, types = val_set.table["key"], val_set.table["type"]
        groups = {}
        for key, kind in zip(keys, types):
            groups.setdefault({"TP": "TN"}.get(kind, kind), []).append(key)
        report["grounding"] = model_grounding(model, val_set, collate, read_nextgqa(args.grounding), keys, groups=groups,
                                              batch_size=config.get("eval_batch_size", config["batch_size"]))
    return write_results(args.output, report, {"predictions.json": predictions})


if __name__ == "__main__":
    main()
