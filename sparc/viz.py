"""Figures (matplotlib is optional: ``pip install 'sparc-videoqa[viz]'``; imported only when drawing)."""

from __future__ import annotations

from typing import Dict, List, Optional


def demo_figure(png_path: str, test_store, test_split, table: Dict[str, Dict], threshold: float,
                num_examples: int = 4, title: str = "HGA") -> None:
    """The demo's figure: on the left, for the first ``num_examples`` test questions, the teacher's
    per-frame probability of the correct answer with the selection threshold, the frames it keeps
    (filled bars) and the truly causal frames (stars); on the right, test accuracy against epochs for
    every config (mean over seeds) and the final accuracy per config (mean, std over seeds as error bars)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt
    import numpy as np

    qids = test_split.qids[:num_examples]
    priors = test_store.lookup(qids).numpy()
    fig = plt.figure(figsize=(14, 2.0 * num_examples + 1.5))
    grid = fig.add_gridspec(num_examples, 2, width_ratios=[1.5, 1], wspace=0.25, hspace=0.9)
    for n, qid in enumerate(qids):
        ax = fig.add_subplot(grid[n, 0])
        p = priors[n, :, test_split.answer[n]]
        frames = np.arange(len(p))
        kept = p > threshold
        ax.bar(frames, p, color=np.where(kept, "tab:blue", "white"), edgecolor="tab:blue")
        ax.axhline(threshold, color="tab:red", linestyle="--", linewidth=1)
        causal = test_split.causal[n]
        ax.plot(frames[causal], np.full(causal.sum(), 1.1), "*", color="tab:green", markersize=10)
        ax.set_ylim(0, 1.25)
        ax.set_xticks(frames)
        ax.set_xticklabels(["\n".join(f"p{s}·a{a}" for s, a in zip(people, acts))
                            for people, acts in zip(test_split.frame_subject[n], test_split.frame_action[n])], fontsize=6)
        asked, kind = test_split.asked[n], ("", " first", " in the end")[test_split.qtype[n]]
        ax.set_title(f"{qid}: what does subject{asked} (p{asked}) do{kind}? "
                     f"(answer action{test_split.candidates[n, test_split.answer[n]]})", fontsize=9)
        ax.set_ylabel("P(answer)", fontsize=8)
        if n == 0:
            ax.legend(handles=[
                plt.Rectangle((0, 0), 1, 1, color="tab:blue", label=f"kept (P > {threshold})"),
                plt.Line2D([], [], color="tab:red", linestyle="--", label="threshold"),
                plt.Line2D([], [], marker="*", color="tab:green", linestyle="", label="truly causal frame"),
            ], fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.3), ncol=3, frameon=False)
        if n == num_examples - 1:
            ax.set_xlabel("frame (the person·action pairs it shows)", fontsize=8)
    right = grid[:, 1].subgridspec(2, 1, hspace=0.35)
    labels = list(table)
    colors = {k: ("tab:gray" if k == "plain" else plt.cm.tab10(i % 10)) for i, k in enumerate(labels)}
    ax = fig.add_subplot(right[0])
    for k in labels:
        curve = table[k].get("curve") or []
        ax.plot(np.arange(1, len(curve) + 1), curve, marker=".", color=colors[k], label=k,
                linewidth=2 if k == "plain" else 1.2)
    ax.set_xlabel("epoch", fontsize=8)
    ax.set_ylabel("test accuracy (%)", fontsize=8)
    ax.set_title("accuracy against epochs (mean over seeds)", fontsize=9)
    ax.legend(fontsize=7)
    ax = fig.add_subplot(right[1])
    means, stds = [table[k]["mean"] for k in labels], [table[k]["std"] for k in labels]
    ax.bar(range(len(labels)), means, yerr=stds, capsize=4, color=[colors[k] for k in labels])
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=25, ha="right", fontsize=7)
    for i, (m, sd) in enumerate(zip(means, stds)):
        ax.text(i, m + sd + 1, f"{m:.1f}", ha="center", va="bottom", fontsize=8)
    ax.axhline(100 / priors.shape[2], color="black", linestyle=":", linewidth=1, label="chance")
    ax.set_ylabel("test accuracy (%)", fontsize=8)
    ax.set_ylim(0, 105)
    ax.set_title(f"{title} on the synthetic benchmark (mean ± std over seeds)", fontsize=9)
    ax.legend(fontsize=7)
    fig.savefig(png_path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def prior_figures(out_dir: str, store, records, threshold: float = 0.5, by: Optional[str] = None) -> List[str]:
    """One PNG per question in ``records`` (:class:`sparc.prior_tools.AnswerRecord`s, all in ``store``):
    bars of the teacher's ``P[t, correct answer]`` over the valid frames, the threshold line, kept frames
    (``P > threshold``) filled — SpARC's Fig. 3 without the images — plus an ``index.html`` showing them
    all with their qids. Returns the PNG file names (relative to ``out_dir``), in ``records`` order."""
    import html
    import os
    import re

    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt
    import numpy as np

    from sparc.prior_tools import answer_probs

    os.makedirs(out_dir, exist_ok=True)
    records = list(records)
    p_all, lengths = answer_probs(store, records)
    names: List[str] = []
    for n, r in enumerate(records):
        # qids may hold any characters: number the files and keep a tame slice of the qid.
        name = f"{n:04d}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', r.qid)[:60]}.png"
        p = p_all[n, : lengths[n]]
        frames = np.arange(len(p))
        kept = p > threshold
        fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * len(p) + 1.5), 2.4))
        ax.bar(frames, p, color=np.where(kept, "tab:blue", "white"), edgecolor="tab:blue")
        ax.axhline(threshold, color="tab:red", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
        ax.set_ylim(0, 1.05)
        ax.set_xticks(frames)
        ax.tick_params(axis="x", labelsize=7)
        extra = f", {by} {r.fields.get(by, '')}" if by else ""
        ax.set_title(f"{r.qid}: answer {r.answer}{extra}; {int(kept.sum())}/{len(p)} frames kept", fontsize=9)
        ax.set_xlabel("frame", fontsize=8)
        ax.set_ylabel("P(answer)", fontsize=8)
        ax.legend(fontsize=7, loc="upper right", frameon=False)
        fig.savefig(os.path.join(out_dir, name), dpi=90, bbox_inches="tight")
        plt.close(fig)
        names.append(name)
    items = []
    for r, name in zip(records, names):
        extra = f" &middot; {html.escape(by)}: {html.escape(r.fields.get(by, ''))}" if by else ""
        items.append(f'<figure><img src="{html.escape(name)}" alt="{html.escape(r.qid)}">'
                     f"<figcaption><code>{html.escape(r.qid)}</code> &middot; answer {r.answer}{extra}</figcaption></figure>")
    page = ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>teacher priors</title>"
            "<style>body{font-family:sans-serif}figure{display:inline-block;margin:8px}"
            "img{max-width:520px}</style></head><body>\n"
            f"<h1>Teacher priors: {html.escape(str(store.path))}</h1>\n"
            f"<p>{len(records)} questions; bars: P[frame, correct answer]; filled: kept (P &gt; {threshold:g}).</p>\n"
            + "\n".join(items) + "\n</body></html>\n")
    with open(os.path.join(out_dir, "index.html"), "w", encoding="utf-8") as f:
        f.write(page)
    return names
