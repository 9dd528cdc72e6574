"""ATP-hard: NExT-QA's accuracy on its hard causal and temporal subset, from a NExT-QA run's predictions.

    python recipes/atp_hard.py --run runs/nextqa-hga --data DATA --subset atp-hard-ct4.txt
    python recipes/atp_hard.py --smoke            # a NExT-QA smoke run, then its ATP-hard numbers

ATP-hard (Buch et al., "Revisiting the 'Video' in Video-Language Understanding") is a subset of NExT-QA
val, so there is nothing to train: ``recipes/nextqa.py`` trains and writes ``RUN/predictions.json``
(the official result-file layout), and this script scores it on the subset with NExT-QA's official
arithmetic (``eval_mc.py``'s groups; ATP-hard has no descriptive questions, so ``Acc_C`` and ``Acc_T``
are its C/T breakdown). ``--subset`` takes the public ``atp-hard-ct4.txt`` (0-based row indices into
``val.csv``), a text file of ``video_qid`` keys (one per line), or a CSV copy of the subset in val.csv's
columns (``video``/``video_id`` and ``qid``). The numbers go to ``RUN/atp_hard.json`` (or ``--output``).
Under ``accelerate launch`` the smoke's training runs on every process and the main process scores it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def subset_items(path: Path) -> list:
    """The subset file as row indices or ``video_qid`` keys: a CSV (by its header) gives its keys."""
    from sparc.metrics.nextqa import read_nextqa_rows

    with open(path) as f:
        first = f.readline()
    if "," in first and "qid" in first.split(","):
        return [row["key"] for row in read_nextqa_rows(path)]
    return [line.strip() for line in open(path) if line.strip()]


def write_smoke_subset(val_csv: Path, path: Path) -> Path:
    """ATP-hard's shape on the smoke val split: the causal and temporal rows' indices, as in ct4.txt."""
    from sparc.metrics.nextqa import read_nextqa_rows

    rows = read_nextqa_rows(val_csv)
    path.write_text("".join(f"{i}\n" for i, row in enumerate(rows) if row["type"][0] in "CT"))
    return path


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", help="a recipes/nextqa.py run folder (its predictions.json)")
    p.add_argument("--data", help="the NExT-QA folder of that run (nextqa/val.csv)")
    p.add_argument("--subset", help="atp-hard-ct4.txt, a file of video_qid keys, or a CSV of the subset's rows")
    p.add_argument("--output", help="where the numbers go (default RUN/atp_hard.json)")
    p.add_argument("--smoke", action="store_true", help="train a NExT-QA smoke run and score it on a generated subset")
    args, rest = p.parse_known_args(argv)
    if rest and not args.smoke:
        p.error(f"unrecognized arguments: {' '.join(rest)}")

    from sparc.metrics import atp_hard_accuracy
    from sparc.recipe import is_main_process, machine

    if args.smoke:
        import importlib.util

        spec = importlib.util.spec_from_file_location("nextqa_recipe", HERE / "nextqa.py")
        nextqa = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(nextqa)
        args.run = args.run or tempfile.mkdtemp(prefix="sparc-atp-hard-smoke-")
        nextqa.main(["--smoke", "--output", args.run, *rest])     # every process trains; the main one scores
        args.data = str(Path(args.run) / "smoke-data")
        if not is_main_process():
            return {}
        args.subset = str(write_smoke_subset(Path(args.data) / "nextqa" / "val.csv", Path(args.run) / "atp-hard-smoke.txt"))
    missing = [name for name in ("run", "data", "subset") if getattr(args, name) is None]
    if missing:
        p.error(f"--{missing[0]} is required (or --smoke)")
    if not is_main_process():
        return {}
    run, data = Path(args.run), Path(args.data)
    predictions = run / "predictions.json"
    if not predictions.exists():
        p.error(f"{predictions} does not exist: --run must be a finished recipes/nextqa.py run")
    items = subset_items(Path(args.subset))
    report = {"benchmark": "ATP-hard (NExT-QA val)", "run": str(run), "subset": str(args.subset),
              "questions": len(items), "metrics": atp_hard_accuracy(data / "nextqa" / "val.csv", predictions, items),
              "machine": machine()}
    trained = run / "results.json"
    if trained.exists():
        report["trained"] = {k: v for k, v in json.loads(trained.read_text()).items()
                             if k in ("backbone", "techniques", "global_step")}
    out = Path(args.output) if args.output else run / "atp_hard.json"
    out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report["metrics"], indent=1))
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
