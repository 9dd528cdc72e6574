"""``--techniques`` beyond SpARC's rows in the recipes: contrastive masking joins +T+S on each recipe whose
adapter has its hooks (HGA on BERT features, HGA and memory-attention on word ids), results.json shows its
term trained, and an open-ended head refuses it naming the technique and the adapter."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def smoke(recipe, output, *args):
    return subprocess.run([sys.executable, str(RECIPES / recipe), "--smoke", "--output", str(output), *args],
                          timeout=300, capture_output=True, text=True, env=dict(os.environ))


@pytest.mark.parametrize("recipe, args", [
    ("nextqa.py", ("--backbone", "hga")),              # BERT token features: the learned mask vector
    ("dramaqa.py", ("--pretrain-epochs", "0")),        # word ids: the vocabulary's <mask>
    ("tgifqa.py", ("--task", "action")),               # word ids: the unknown-word id
], ids=["nextqa-hga", "dramaqa", "tgifqa-action"])
def test_contrastive_masking_trains_beside_sparc(recipe, args, tmp_path):
    done = smoke(recipe, tmp_path, "--techniques", "sparc,contrastive", *args)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["techniques"] == "sparc,contrastive"
    terms = results["loss_terms"]
    assert {"guided", "consistency", "spatial", "contrastive"} <= set(terms) and terms["contrastive"] > 0, terms


def test_an_open_ended_head_refuses_contrastive_masking(tmp_path):
    done = smoke("agqa.py", tmp_path, "--techniques", "sparc,contrastive")
    assert done.returncode != 0
    assert "ContrastiveMasking supervises the model's hypothesis, which HGAAdapter does not return" in done.stderr
