"""HGA at paper size: a SpARC step's three views (whole video, causal frames, one frame) as three
forwards with the question encodings shared, against one forward over 3B rows (every view padded to
T in lengths mode, the encodings' rows repeated). Forward + backward, interleaved, median ratio."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from backbones.hga import FRAMES, paper_size  # noqa: E402  (benchmarks/ is the script's folder)

from sparc.frames import gather_kept  # noqa: E402
from sparc.rows import select_rows  # noqa: E402


def main(argv=None) -> float:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    B, T = args.batch_size, FRAMES
    model, adapter, batch = paper_size(B)
    model.train()
    g = torch.Generator().manual_seed(0)
    keep = torch.rand(B, T, generator=g) < 0.25
    keep[~keep.any(1), 0] = True
    single = torch.nn.functional.one_hot(torch.randint(0, T, (B,), generator=g), T).bool()

    def three():
        text = adapter.encode_text(model, batch)
        return sum(out.logits.sum() for out in (adapter.forward(model, batch, text=text),
                                                adapter.forward_subset(model, batch, keep, text),
                                                adapter.forward_subset(model, batch, single, text)))

    def one():
        text = adapter.encode_text(model, batch)
        videos = [batch["vid_feats"], gather_kept(batch["vid_feats"], keep)[0], gather_kept(batch["vid_feats"], single)[0]]
        videos = [torch.nn.functional.pad(v, (0, 0, 0, T - v.shape[1])) for v in videos]
        rows = torch.arange(B).repeat(3)
        big = {"vid_feats": torch.cat(videos), "qas": batch["qas"][rows], "qas_lengths": batch["qas_lengths"][rows],
               "vid_lengths": torch.cat([torch.full((B,), T), keep.sum(1), single.sum(1)])}
        return adapter.forward(model, big, text=select_rows(text, rows)).logits.sum()

    times = {"three": [], "one": []}
    for fn in (three, one):          # warm-up
        model.zero_grad()
        fn().backward()
    for r in range(args.repeats):
        order = (("three", three), ("one", one)) if r % 2 == 0 else (("one", one), ("three", three))
        for name, fn in order:
            model.zero_grad()
            t0 = time.perf_counter()
            fn().backward()
            times[name].append(time.perf_counter() - t0)
    ratio = statistics.median(o / t for o, t in zip(times["one"], times["three"]))
    print(f"HGA B={B}: three forwards {statistics.median(times['three']):.2f}s, one 3B forward "
          f"{statistics.median(times['one']):.2f}s, one / three = {ratio:.2f}")
    return ratio


if __name__ == "__main__":
    main()
