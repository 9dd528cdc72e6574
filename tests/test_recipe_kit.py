"""sparc.recipe: the pieces every benchmark recipe shares."""

import argparse

import pytest

import sparc
from sparc.recipe import load_config, recipe_parser, require, sparc_techniques

CONFIG = {"threshold": 0.4, "consistency_weight": 0.5, "spatial_weight": 2.0, "mixup": {"alpha": 0.2, "beta": 0.3}}


def test_techniques_by_name_carry_the_configuration():
    assert sparc_techniques("plain", CONFIG) == []
    guidance, spatial = sparc_techniques("sparc", CONFIG)
    assert isinstance(guidance, sparc.TemporalGuidance) and isinstance(spatial, sparc.SpatialDistillation)
    assert guidance.frames.threshold == 0.4 and guidance.consistency_weight == 0.5 and spatial.weight == 2.0
    mixup = sparc_techniques("sparc+tgm", CONFIG)[2]
    assert isinstance(mixup, sparc.TemporalGuidedMixup) and (mixup.alpha, mixup.beta) == (0.2, 0.3)


def test_a_benchmark_trained_without_augmentation_refuses_the_mixup_row():
    with pytest.raises(ValueError, match="without augmentation"):
        sparc_techniques("sparc+tgm", {**CONFIG, "mixup": None})
    with pytest.raises(ValueError, match="one of"):
        sparc_techniques("sparc+x", CONFIG)


def test_flags_override_the_configuration_file(tmp_path):
    (tmp_path / "c.json").write_text('{"epochs": 60, "batch_size": 256, "lr": 1e-4}')
    p = recipe_parser("Doc.\n\nMore.", data_help="data")
    args = p.parse_args(["--epochs", "3", "--lr", "0.5"])
    assert load_config(tmp_path / "c.json", args) == {"epochs": 3, "batch_size": 256, "lr": 0.5}
    with pytest.raises(SystemExit):
        require(args, p, ("data",))                        # argparse's error: "--data is required (or --smoke)"
    assert isinstance(p, argparse.ArgumentParser)
