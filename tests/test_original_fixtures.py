"""Every folder in tests/fixtures/original/ is reproduced by its reference model, built from the
folder's config.json alone (sparc.testing.original_fixture), to 1e-5 on every stored output it covers."""

from pathlib import Path

import pytest

from sparc.testing import original_fixture

FOLDERS = sorted(p for p in (Path(__file__).parent / "fixtures" / "original").iterdir() if (p / "config.json").exists())


def test_the_backbone_fixtures_are_all_here():
    assert {p.name for p in FOLDERS} >= {"albef", "hga", "hme", "stage", "vgt"}


@pytest.mark.parametrize("folder", FOLDERS, ids=[p.name for p in FOLDERS])
def test_reference_model_reproduces_the_original(folder):
    fx = original_fixture(folder)
    diffs = fx.compare()
    assert diffs, f"{folder.name}: the reference model reproduced no stored output"
    worst = max(diffs, key=diffs.get)
    assert diffs[worst] <= 1e-5, f"{folder.name}: {worst} differs by {diffs[worst]:.3g}"
