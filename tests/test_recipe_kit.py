"""sparc.recipe: the pieces every benchmark recipe shares."""

import argparse

import pytest

import sparc
from sparc.recipe import load_config, recipe_parser, require, sparc_preset, sparc_techniques, technique_spec, uses_priors

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
    with pytest.raises(ValueError, match="not one of"):
        sparc_techniques("sparc+x", CONFIG)


def test_techniques_flag_adds_extras_to_a_row_in_one_order():
    assert technique_spec("contrastive, span,sparc+tgm") == "sparc+tgm,span,contrastive"
    assert technique_spec("span") == "plain,span" and not uses_priors("span") and uses_priors("sparc,span")
    assert sparc_preset("attention,sparc") == "sparc"
    for bad, message in (("sparc,plain", "at most one"), ("span,span", "each name once"), ("spam", "not one of"),
                         ("", "not one of")):
        with pytest.raises(ValueError, match=message):
            technique_spec(bad)
    with pytest.raises(SystemExit):                    # argparse prints technique_spec's message
        recipe_parser("Doc.", data_help="data").parse_args(["--techniques", "sparc,spam"])


def test_extras_carry_the_configuration_weights():
    config = {**CONFIG, "ts_weight": 0.25, "att_weight": 0.05, "attention": {"alpha": 10.0, "num_negatives": 3},
              "contrastive": {"weight": 0.3, "prob": 0.5}}
    guidance, spatial, span, attention, contrastive = sparc_techniques("sparc,span,attention,contrastive", config,
                                                                       text_width=300)
    assert isinstance(span, sparc.SpanSupervision) and span.weight == 0.25
    assert isinstance(attention, sparc.AttentionSupervision)
    assert (attention.weight, attention.alpha, attention.num_negatives) == (0.05, 10.0, 3)
    assert isinstance(contrastive, sparc.ContrastiveMasking) and (contrastive.weight, contrastive.prob) == (0.3, 0.5)
    assert contrastive.mask_vector.shape == (300,)
    # without the configuration's entries: the papers' weights (TVQA+ 4.3, paper 002 4.1)
    span, attention, contrastive = sparc_techniques("span,attention,contrastive", CONFIG)
    assert (span.weight, attention.weight, attention.alpha, contrastive.weight, contrastive.prob) == (0.5, 0.1, 20.0, 0.1, 0.2)


def test_flags_override_the_configuration_file(tmp_path):
    (tmp_path / "c.json").write_text('{"epochs": 60, "batch_size": 256, "lr": 1e-4}')
    p = recipe_parser("Doc.\n\nMore.", data_help="data")
    args = p.parse_args(["--epochs", "3", "--lr", "0.5"])
    assert load_config(tmp_path / "c.json", args) == {"epochs": 3, "batch_size": 256, "lr": 0.5}
    with pytest.raises(SystemExit):
        require(args, p, ("data",))                        # argparse's error: "--data is required (or --smoke)"
    assert isinstance(p, argparse.ArgumentParser)
