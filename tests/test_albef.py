"""ALBEF VQA reference model and teacher (sparc.teachers.albef) against the original's fixture."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from sparc.teachers.albef import (
    ALBEF,
    ALBEFTeacher,
    fixture_model,
    load_albef_checkpoint,
    resample_pos_embed,
)
from sparc.teachers.base import ImageQATeacher
from sparc.testing import assert_float32_close

from helpers import close_ll, model64  # tests/helpers.py

FIXTURE = Path(__file__).parent / "fixtures/original/albef"
# The recorded outputs are float32: reproductions are held to float32 rounding at each output's scale
# (sparc.testing.float32_tolerance); equivalences run a float64 model (helpers.close_ll).


@pytest.fixture(scope="module")
def state_dict():
    return load_file(str(FIXTURE / "state_dict.safetensors"))


def _build():
    return fixture_model(json.loads((FIXTURE / "config.json").read_text()))


def test_top_k_ids_are_exact(fx):
    got = fx.predict()
    for name in ("rank_topk_ids", "rank_k_small_topk_ids"):
        assert torch.equal(got[name], fx.outputs[name]), name


def test_rank_answer_matches_forward_and_counts_first_token_twice(fx):
    inp = fx.inputs
    with torch.no_grad():
        ids, probs = fx.model(inp["image"], inp["question_input_ids"], inp["question_attention_mask"],
                              inp["answer_input_ids"], inp["answer_attention_mask"], k=3)
    assert torch.equal(ids, fx.outputs["rank_k_small_topk_ids"])
    assert_float32_close(probs, fx.outputs["rank_k_small_topk_probs"], name="rank_k_small_topk_probs")
    out = fx.outputs
    assert torch.allclose(out["rank_log_scores"], out["first_token_prob"].log() + out["cand_loglik"], atol=1e-5)


def test_decoder_head_is_tied(fx):
    dec = fx.model.text_decoder
    assert dec.cls.predictions.decoder.weight is dec.bert.embeddings.word_embeddings.weight
    assert dec.cls.predictions.decoder.bias is dec.cls.predictions.bias


def test_momentum_keys_dropped_and_unused(fx, state_dict):
    momentum = [k for k in state_dict if k.startswith(("visual_encoder_m.", "text_encoder_m.", "text_decoder_m."))]
    assert len(momentum) == fx.config["momentum_keys"]["count"]
    assert not any("_m." in k for k in fx.model.state_dict())
    # Changing the momentum copies changes nothing.
    noisy = {k: (v + 1.0 if k in momentum and v.is_floating_point() else v) for k, v in state_dict.items()}
    model, run = _build()
    load_albef_checkpoint(model, {"model": noisy})
    model.eval()
    with torch.no_grad():
        got = run(model, fx.inputs)
    assert_float32_close(got["cand_loglik"], fx.outputs["cand_loglik"], name="cand_loglik")


def test_missing_or_unexpected_key_still_raises(state_dict):
    model, _ = _build()
    missing = dict(state_dict)
    del missing["text_encoder.encoder.layer.1.crossattention.self.key.weight"]
    with pytest.raises(RuntimeError, match="crossattention.self.key.weight"):
        load_albef_checkpoint(model, missing)
    extra = dict(state_dict)
    extra["text_encoder.pooler.dense.weight"] = torch.zeros(32, 32)
    with pytest.raises(RuntimeError, match="pooler"):
        model.load_state_dict(extra)


def test_load_from_path(tmp_path, fx, state_dict):
    path = tmp_path / "vqa.pth"
    torch.save({"model": state_dict, "epoch": 3}, path)
    model, run = _build()
    load_albef_checkpoint(model, path)
    model.eval()
    with torch.no_grad():
        got = run(model, fx.inputs)
    assert_float32_close(got["rank_log_scores"], fx.outputs["rank_log_scores"], name="rank_log_scores")


class PickledConfig(dict):
    """Stands in for the yaml config object ALBEF's training script saves next to the weights."""


def test_a_checkpoint_with_pickled_objects_needs_trust(tmp_path, state_dict):
    path = tmp_path / "vqa.pth"
    torch.save({"model": state_dict, "config": PickledConfig(image_res=32)}, path)
    model, _ = _build()
    with pytest.raises(ValueError, match="trust_checkpoint=True"):
        load_albef_checkpoint(model, path)
    load_albef_checkpoint(model, path, trust_checkpoint=True)
    assert torch.equal(model.state_dict()["visual_encoder.pos_embed"], state_dict["visual_encoder.pos_embed"])


def test_pos_embed_resampled_for_another_resolution(state_dict):
    config = json.loads((FIXTURE / "config.json").read_text())
    bert = config["runtime_overrides"]["bert_config_json"]
    model = ALBEF(image_res=64, vision_width=32, vision_depth=2, vision_heads=2, bert_config=bert, decoder_layers=2)
    load_albef_checkpoint(model, state_dict)  # checkpoint at 32 px: 2x2 grid -> 4x4
    old = state_dict["visual_encoder.pos_embed"]
    grid = old[:, 1:].reshape(1, 2, 2, 32).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(4, 4), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(1, 16, 32)
    expected = torch.cat([old[:, :1], grid], dim=1)
    assert model.visual_encoder.pos_embed.shape == (1, 17, 32)
    assert torch.allclose(model.visual_encoder.pos_embed.detach(), expected, atol=1e-6)
    assert torch.equal(resample_pos_embed(old, 4), old)  # same grid: unchanged
    with torch.no_grad():
        assert model.encode_image(torch.randn(1, 3, 64, 64)).shape == (1, 17, 32)


def test_teacher_scores(fx):
    teacher = ALBEFTeacher(fx.model)
    assert isinstance(teacher, ImageQATeacher)
    inp = fx.inputs
    frames = inp["image"]
    state = teacher.encode_images(frames)
    assert_float32_close(state.image_embeds, fx.outputs["image_embeds"], name="image_embeds")
    q_ids, q_mask = inp["question_input_ids"][1], inp["question_attention_mask"][1]
    cands = inp["answer_input_ids"]
    probs = teacher.score(state, q_ids[q_mask.bool()], cands)
    assert probs.shape == (2, 5)
    assert torch.allclose(probs.sum(-1), torch.ones(2))
    # Frame 1 with question 1 is the fixture's second row: softmax of the plain log-likelihood.
    assert_float32_close(probs[1], fx.outputs["cand_loglik"][1].softmax(-1), name="probabilities")
    # Extra padding columns change nothing (an equivalence: a float64 model); a list of questions gives [Q, F, C].
    padded = F.pad(cands, (0, 3))
    teacher64 = ALBEFTeacher(model64(fx.model))
    state64 = teacher64.encode_images(frames)
    assert close_ll(teacher64.score(state64, (q_ids, q_mask), padded), teacher64.score(state64, q_ids[q_mask.bool()], cands))
    both = teacher.score(state, [inp["question_input_ids"][0], q_ids[:5]], [cands, cands])
    assert both.shape == (2, 2, 5)
    # Length normalisation divides by the number of scored tokens (answer tokens + [SEP]).
    norm = ALBEFTeacher(fx.model, length_normalize=True).log_scores(state, q_ids[:5], cands)
    n_tok = (cands[:, 1:] != 0).sum(1)
    assert torch.allclose(norm * n_tok, teacher.log_scores(state, q_ids[:5], cands), atol=1e-5)


def test_teacher_with_tokenizer_strings(tmp_path, fx):
    from transformers import BertTokenizer

    words = ["[PAD]"] + [f"[unused{i}]" for i in range(100)] + ["[CLS]", "[SEP]", "[MASK]", "[UNK]"]
    words += ["what", "is", "the", "man", "holding", "a", "cup", "phone", "red", "blue"]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    tok = BertTokenizer(str(tmp_path / "vocab.txt"))
    assert tok.cls_token_id == 101 and tok.sep_token_id == 102
    teacher = ALBEFTeacher(fx.model, tokenizer=tok)
    uint8 = torch.randint(0, 256, (3, 40, 48, 3), dtype=torch.uint8)  # resized to 32x32
    state = teacher.encode_images(uint8)
    assert state.image_embeds.shape == (3, 5, 32) and len(state) == 3
    probs = teacher.score(state, "what is the man holding", ["a cup", "phone", "red blue cup"])
    assert probs.shape == (3, 3) and torch.allclose(probs.sum(-1), torch.ones(3))
    ids = torch.tensor([101] + tok.encode("what is the man holding", add_special_tokens=False))
    cands = torch.tensor([[101, 110, 111, 102, 0], [101, 112, 102, 0, 0], [101, 113, 114, 111, 102]])
    assert torch.allclose(probs, teacher.score(state, ids, cands), atol=1e-6)


def test_pretraining_checkpoint_becomes_vqa_model():
    bert = {"hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2, "num_hidden_layers": 4,
            "fusion_layer": 2, "encoder_width": 16, "vocab_size": 64, "max_position_embeddings": 12}
    src = ALBEF(image_res=32, vision_width=16, vision_depth=1, vision_heads=2, bert_config=bert, decoder_layers=2)
    sd = src.state_dict()
    pre = {k: v for k, v in sd.items() if k.startswith("visual_encoder.")}
    pre.update({"text_encoder.bert." + k[len("text_encoder."):]: v for k, v in sd.items()
                if k.startswith("text_encoder.")})
    head = "text_decoder.cls.predictions."
    pre.update({"text_encoder.cls.predictions." + k[len(head):]: v + 1 for k, v in sd.items() if k.startswith(head)})
    # In a real checkpoint the MLM output projection is tied to the word embeddings.
    pre["text_encoder.cls.predictions.decoder.weight"] = pre["text_encoder.bert.embeddings.word_embeddings.weight"]
    pre.update({"vision_proj.weight": torch.zeros(8, 16), "temp": torch.tensor(0.07),
                "text_encoder_m.bert.embeddings.word_embeddings.weight": torch.zeros(64, 16)})
    model = ALBEF(image_res=32, vision_width=16, vision_depth=1, vision_heads=2, bert_config=bert, decoder_layers=2)
    load_albef_checkpoint(model, {"model": pre})  # strict
    got = model.state_dict()
    for i in range(2):
        for name in ("attention.self.query.weight", "crossattention.self.value.bias", "output.dense.weight"):
            assert torch.equal(got[f"text_decoder.bert.encoder.layer.{i}.{name}"],
                               sd[f"text_encoder.encoder.layer.{i + 2}.{name}"])
    assert torch.equal(got["text_decoder.bert.embeddings.word_embeddings.weight"],
                       sd["text_encoder.embeddings.word_embeddings.weight"])
    assert torch.equal(got["text_decoder.cls.predictions.transform.dense.weight"],
                       sd[head + "transform.dense.weight"] + 1)
    assert torch.equal(got["text_encoder.encoder.layer.0.attention.self.key.weight"],
                       sd["text_encoder.encoder.layer.0.attention.self.key.weight"])


def test_the_teacher_is_reachable_from_sparc_teachers_without_loading_it_eagerly():
    import subprocess
    import sys

    code = ("import sys, sparc.teachers as t; eager = 'timm' in sys.modules or 'transformers' in sys.modules; "
            "print(eager, t.ALBEFTeacher.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "sparc.teachers.albef"]
