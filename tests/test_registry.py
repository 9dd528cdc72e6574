"""sparc.registry: one registry per kind; several files add roles to one name; unknown names list the known."""

import pytest

from sparc.registry import Registry


def test_roles_from_several_places_meet_under_one_name():
    reg = Registry("backbone")
    reg.register("hga", title="HGA", demo="demo build")

    @reg.register("hga", "paper")
    def paper_size(batch_size):
        return batch_size

    reg.register("vgt", demo="vgt demo")
    assert reg.names() == ("hga", "vgt") and list(reg) == ["hga", "vgt"] and len(reg) == 2 and "hga" in reg
    assert reg.names("paper") == ("hga",)
    assert reg.get("hga", "paper") is paper_size and reg.get("hga").title == "HGA"
    assert "paper" in reg.get("hga") and "paper" not in reg.get("vgt")


def test_unknown_names_and_missing_roles_say_what_there_is():
    reg = Registry("technique")
    reg.register("T", build=int)
    reg.register("S", build=float, extra=1)
    with pytest.raises(ValueError, match="unknown technique 'Q'; choose one of T, S"):
        reg.get("Q")
    with pytest.raises(ValueError, match="technique 'T' has no 'extra'; choose one of S"):
        reg.get("T", "extra")
    with pytest.raises(AttributeError, match="technique 'T' has no 'extra'"):
        reg.get("T").extra


def test_a_role_is_claimed_once():
    reg = Registry("backbone")
    build = object()
    reg.register("hga", demo=build)
    reg.register("hga", demo=build)   # the same object again: no conflict
    with pytest.raises(ValueError, match="backbone 'hga': 'demo' is registered already"):
        reg.register("hga", demo=object())
    with pytest.raises(TypeError):
        reg.register("hga", "paper", demo=build)


def test_the_backbone_and_technique_registries_are_filled():
    from sparc.backbones import BACKBONES
    from sparc.technique_names import TECHNIQUES

    assert set(BACKBONES.names("demo")) == {"hga", "hme", "memory", "stage", "vgt"}
    assert set(BACKBONES.names("fixtures")) == {"hga", "hme", "stage", "vgt"}
    assert TECHNIQUES.names()[:6] == ("T", "S", "TGM", "mixup", "span", "attention")
