"""BlipTeacher (sparc.teachers.hf_vqa) over a tiny random BlipForQuestionAnswering."""

import pytest
import torch

from sparc.teachers.base import ImageQATeacher
from sparc.teachers.hf_vqa import BlipTeacher

from helpers import close_ll, model64  # tests/helpers.py

transformers = pytest.importorskip("transformers")

# Equivalences (the teacher's batched scoring = the submodules one candidate at a time, = BLIP's own
# loss, padding changes nothing) run a float64 copy of the model. The teacher takes its log-softmax in
# float32 whatever the model's dtype, so they hold to helpers.LL_K float32 epsilons at the
# log-likelihoods' scale: that step's rounding, not the CPU's float32 kernels for the whole model.

BOS, SEP, PAD = 120, 102, 0


def _tiny_model(seed: int = 0):
    from transformers import BlipConfig, BlipForQuestionAnswering

    torch.manual_seed(seed)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  image_size=32, patch_size=16,
                  initializer_range=0.2)  # the default (1e-10) makes every image look the same
    text = dict(vocab_size=130, hidden_size=32, encoder_hidden_size=32, intermediate_size=64,
                num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=64,
                bos_token_id=BOS, sep_token_id=SEP, pad_token_id=PAD, initializer_range=0.1,
                label_smoothing=0.1)  # the loss would smooth; the teacher's likelihood must not
    config = BlipConfig(text_config=text, vision_config=vision, label_smoothing=0.1)
    return BlipForQuestionAnswering(config).eval()


@pytest.fixture(scope="module")
def model():
    return _tiny_model()


@pytest.fixture(scope="module")
def frames():
    torch.manual_seed(1)
    return torch.randn(5, 3, 32, 32)


QUESTION = torch.tensor([101, 104, 105, 106, 107, 102])  # [CLS] q [SEP]
CANDS = torch.tensor([[BOS, 110, 111, SEP, PAD],
                      [BOS, 112, SEP, PAD, PAD],
                      [BOS, 113, 114, 111, SEP]])


def _direct_loglik(model, frame, question, cands):
    """Summed log-likelihood of each candidate for one frame, straight through the submodules."""
    with torch.no_grad():
        img = model.vision_model(pixel_values=frame[None]).last_hidden_state
        q = question[None]
        qm = torch.ones_like(q)
        qs = model.text_encoder(input_ids=q, attention_mask=qm, encoder_hidden_states=img,
                                encoder_attention_mask=torch.ones(img.shape[:2], dtype=torch.long)
                                ).last_hidden_state
        out = []
        for row in cands:
            ids = row[row != PAD][None]
            logits = model.text_decoder(input_ids=ids, attention_mask=torch.ones_like(ids),
                                        encoder_hidden_states=qs, encoder_attention_mask=qm,
                                        labels=None).logits
            logp = logits[0].log_softmax(-1)
            out.append(sum(logp[t, ids[0, t + 1]] for t in range(ids.shape[1] - 1)))
        return torch.stack(out)


def test_protocol_and_probabilities(model, frames):
    teacher = BlipTeacher(model, frame_chunk=2)
    assert isinstance(teacher, ImageQATeacher)
    state = teacher.encode_images(frames)
    assert state.shape == (5, 1 + 4, 32)
    probs = teacher.score(state, QUESTION, CANDS)
    assert probs.shape == (5, 3)
    assert torch.allclose(probs.sum(-1), torch.ones(5), atol=1e-6)
    assert (probs > 0).all()
    ll = teacher.log_scores(state, QUESTION, CANDS)
    assert (ll[0] - ll[1]).abs().max() > 0.05  # the frames matter


def test_loglik_equals_direct_computation(model, frames):
    model, frames = model64(model), frames.double()
    teacher = BlipTeacher(model, frame_chunk=2)  # chunks of 2, 2, 1 frames
    ll = teacher.log_scores(teacher.encode_images(frames), QUESTION, CANDS)
    direct = torch.stack([_direct_loglik(model, f, QUESTION, CANDS) for f in frames])
    assert direct.dtype == torch.float64 and close_ll(ll, direct), (ll - direct).abs().max()
    # and not the smoothed training loss
    probs = teacher.score(teacher.encode_images(frames), QUESTION, CANDS)
    assert close_ll(probs, direct.softmax(-1))


def test_loglik_is_blips_unsmoothed_loss(model, frames):
    """BLIP's own decoder loss (labels shifted inside, pads -> -100) with label smoothing off is
    minus the teacher's log-likelihood; with the config's smoothing (0.1 here) it is not."""
    model = model64(model)  # a copy: the label smoothing switch below stays local
    teacher = BlipTeacher(model)
    state = teacher.encode_images(frames[:1])
    ll = teacher.log_scores(state, QUESTION, CANDS)[0]
    qs = teacher.encode_question(state, QUESTION[None], torch.ones(1, QUESTION.shape[0], dtype=torch.long))
    labels = CANDS.masked_fill(CANDS == PAD, -100)
    dec = model.text_decoder

    def loss():
        with torch.no_grad():
            return dec(input_ids=CANDS, attention_mask=(CANDS != PAD).long(),
                       encoder_hidden_states=qs.expand(3, -1, -1), labels=labels, reduction="none").loss

    assert dec.label_smoothing == 0.1
    assert (loss() + ll.double()).abs().max() > 1e-3
    dec.label_smoothing = 0.0
    try:
        assert close_ll(loss(), -ll)
    finally:
        dec.label_smoothing = 0.1


def test_length_normalize(model, frames):
    plain = BlipTeacher(model)
    norm = BlipTeacher(model, length_normalize=True)
    state = plain.encode_images(frames)
    ll = plain.log_scores(state, QUESTION, CANDS)
    n_tokens = torch.tensor([3.0, 2.0, 4.0])  # answer tokens + [SEP]
    assert torch.allclose(norm.log_scores(state, QUESTION, CANDS), ll / n_tokens, atol=1e-6)


def test_extra_pad_columns_change_nothing(model, frames):
    teacher = BlipTeacher(model64(model))
    state = teacher.encode_images(frames)
    padded = torch.cat([CANDS, torch.full((3, 4), PAD)], dim=1)
    assert close_ll(teacher.log_scores(state, QUESTION, padded), teacher.log_scores(state, QUESTION, CANDS))
    # an explicit (ids, mask) pair gives the same
    mask = (padded != PAD).long()
    assert close_ll(teacher.score(state, QUESTION, (padded, mask)), teacher.score(state, QUESTION, CANDS))


def test_image_state_reused_across_questions(model, frames):
    teacher = BlipTeacher(model, frame_chunk=3)
    q2 = torch.tensor([101, 108, 109, 102])
    c2 = torch.tensor([[BOS, 115, SEP], [BOS, 116, SEP]])
    state = teacher.encode_images(frames)
    p1 = teacher.score(state, QUESTION, CANDS)
    p2 = teacher.score(state, q2, c2)
    assert torch.allclose(p1, teacher.score(teacher.encode_images(frames), QUESTION, CANDS))
    assert torch.allclose(p2, teacher.score(teacher.encode_images(frames), q2, c2))
    # a list of questions over one state: [Q, F, C]
    c3 = torch.tensor([[BOS, 115, SEP], [BOS, 116, SEP], [BOS, 117, SEP]])
    stacked = teacher.score(state, [QUESTION, q2], [CANDS, c3])
    assert stacked.shape == (2, 5, 3) and torch.allclose(stacked[0], p1)
    assert torch.allclose(stacked[1], teacher.score(state, q2, c3))


def test_uint8_frames_are_preprocessed(model):
    teacher = BlipTeacher(model)
    uint8 = torch.randint(0, 256, (2, 40, 48, 3), dtype=torch.uint8)
    assert teacher.encode_images(uint8).shape == (2, 5, 32)


def test_strings_with_tokenizer(tmp_path, model, frames):
    from transformers import BertTokenizer

    words = ["[PAD]"] + [f"[unused{i}]" for i in range(100)] + ["[CLS]", "[SEP]", "[MASK]", "[UNK]"]
    words += ["what", "is", "the", "man", "holding", "a", "cup", "phone", "red", "blue"]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    tok = BertTokenizer(str(tmp_path / "vocab.txt"))
    teacher = BlipTeacher(model, tokenizer=tok)
    state = teacher.encode_images(frames)
    probs = teacher.score(state, "what is the man holding", ["a cup", "phone", "red blue cup"])
    # question [CLS] q [SEP]; candidates [DEC] a [SEP] (BLIP's generate starts from bos_token_id)
    assert tok.convert_tokens_to_ids(["[CLS]", "[SEP]", "what", "cup"]) == [101, 102, 105, 111]
    q = torch.tensor([101, 105, 106, 107, 108, 109, 102])
    c = torch.tensor([[BOS, 110, 111, SEP, PAD], [BOS, 112, SEP, PAD, PAD], [BOS, 113, 114, 111, SEP]])
    assert torch.allclose(probs, teacher.score(state, q, c), atol=1e-6)


def test_save_and_load_from_local_directory(tmp_path, model, frames):
    from transformers import BertTokenizer

    words = ["[PAD]"] + [f"[unused{i}]" for i in range(100)] + ["[CLS]", "[SEP]", "[MASK]", "[UNK]", "cup"]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    out = tmp_path / "blip"
    model.save_pretrained(out)
    BertTokenizer(str(tmp_path / "vocab.txt")).save_pretrained(out)
    loaded = BlipTeacher.from_pretrained(out)
    assert loaded.tokenizer is not None
    also = BlipTeacher(str(out))
    ref = BlipTeacher(model)
    state = ref.encode_images(frames)
    assert torch.allclose(loaded.encode_images(frames), state, atol=1e-6)
    expected = ref.score(state, QUESTION, CANDS)
    assert torch.allclose(loaded.score(state, QUESTION, CANDS), expected, atol=1e-6)
    assert torch.allclose(also.score(state, QUESTION, CANDS), expected, atol=1e-6)
    assert torch.allclose(loaded.score(state, "cup", ["cup"]), torch.ones(5, 1))


def test_a_directory_without_a_tokenizer_loads_and_broken_tokenizer_files_are_an_error(tmp_path, model):
    out = tmp_path / "blip"
    model.save_pretrained(out)
    assert BlipTeacher.from_pretrained(out).tokenizer is None           # strings then ask for one
    (out / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="blip: its tokenizer files \\(tokenizer_config.json\\) do not load"):
        BlipTeacher.from_pretrained(out)
