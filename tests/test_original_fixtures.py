"""Every folder in tests/fixtures/original/ is reproduced by its reference model, built from the
folder's config.json alone (sparc.testing.original_fixture), to 1e-5 on every stored output it covers."""

from pathlib import Path

import pytest

from sparc.testing import original_fixture

# The stored outputs each reference model reproduces (fixtures may hold more, e.g. inputs' derivatives).
COVERED = {
    "hga": {"out_intended_masks", "predict_idx_intended_masks"},
    "hme": {"out", "predict_idx"},
    "vgt": {"fusion_proj", "answer_g", "logits"},
}
FOLDERS = sorted(p for p in (Path(__file__).parent / "fixtures" / "original").iterdir() if (p / "config.json").exists())


def test_the_backbone_fixtures_are_all_here():
    assert {p.name for p in FOLDERS} >= {"albef", "hga", "hme", "stage", "vgt"}


@pytest.mark.parametrize("folder", FOLDERS, ids=[p.name for p in FOLDERS])
def test_reference_model_reproduces_the_original(folder):
    fx = original_fixture(folder)
    diffs = fx.compare()
    assert set(diffs) == COVERED.get(folder.name, set(fx.outputs)), set(diffs) ^ COVERED.get(folder.name, set(fx.outputs))
    worst = max(diffs, key=diffs.get)
    assert diffs[worst] <= 1e-5, f"{folder.name}: {worst} differs by {diffs[worst]:.3g}"
