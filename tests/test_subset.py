"""Tests for the adapter subset machinery (sparc.adapters.base): mask, lengths and bucket modes.

For each mode, ``forward_subset`` on a keep mask whose rows keep different numbers of frames must
give the logits of running the model on each row alone with its kept frames physically removed.
"""

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from sparc.adapters.base import Adapter, FunctionAdapter
from sparc.outputs import ModelOutput

from helpers import close64  # tests/helpers.py

B, T, D, Q, C = 4, 6, 3, 2, 5
# The test models and inputs are float64, so "equals the per-row sliced run" is checked to float64
# rounding, 1e-10 relative (helpers.REL64), not to a float32-sized 1e-6: the 1e3 garbage in padded
# frames, had it leaked, would move the logits by O(1).


class Recorder(nn.Module):
    """Base: records the shape of the video every call receives, adds a question term."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.q = nn.Linear(Q, C).double()
        self.calls = []

    def record(self, video):
        self.calls.append(tuple(video.shape))


class GRUModel(Recorder):
    """Honours lengths exactly: a GRU over frames packed by lengths."""

    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(D, 4, batch_first=True).double()
        self.head = nn.Linear(4, C).double()

    def forward(self, video, lengths, question):
        self.record(video)
        packed = pack_padded_sequence(video, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, h = self.gru(packed)
        return self.head(h[-1]) + self.q(question)


class MaskedMeanModel(Recorder):
    """Honours a frame mask exactly: a masked mean, then a non-linear head."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(D, 4).double()
        self.head = nn.Linear(4, C).double()

    def forward(self, video, mask, question):
        self.record(video)
        if mask is None:
            mask = torch.ones(video.shape[:2], dtype=video.dtype)
        # A real model (attention with a key padding mask, say) needs the mask to match the frames.
        assert mask.shape == video.shape[:2], f"mask {tuple(mask.shape)} vs video {tuple(video.shape)}"
        m = mask.to(video.dtype)[..., None]
        pooled = (torch.tanh(self.proj(video)) * m).sum(1) / m.sum(1)
        return self.head(pooled) + self.q(question)


class PlainMeanModel(Recorder):
    """Cannot ignore padding: a plain mean over the whole time axis."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(D, 4).double()
        self.head = nn.Linear(4, C).double()

    def forward(self, video, question):
        self.record(video)
        return self.head(torch.tanh(self.proj(video)).mean(1)) + self.q(question)


def make_adapter(mode):
    if mode == "lengths":
        return FunctionAdapter(lambda m, x: m(x["video"], x["lengths"], x["question"]),
                               temporal={"video": 1}, subset="lengths", lengths_field="lengths")
    if mode == "mask":
        return FunctionAdapter(lambda m, x: m(x["video"], x.get("mask"), x["question"]),
                               temporal={"video": 1}, subset="mask", mask_field="mask")
    return FunctionAdapter(lambda m, x: m(x["video"], x["question"]), temporal={"video": 1}, subset="bucket")


def make_model(mode):
    return {"lengths": GRUModel, "mask": MaskedMeanModel, "bucket": PlainMeanModel}[mode]()


def make_inputs(mode, with_padding_field=True):
    g = torch.Generator().manual_seed(1)
    inputs = {
        "video": torch.randn(B, T, D, generator=g, dtype=torch.float64),
        "question": torch.randn(B, Q, generator=g, dtype=torch.float64),
        "qid": [f"q{i}" for i in range(B)],
        "note": "passes through",
    }
    if with_padding_field and mode == "lengths":
        inputs["lengths"] = torch.full((B,), T, dtype=torch.long)
    if with_padding_field and mode == "mask":
        inputs["mask"] = torch.ones(B, T, dtype=torch.float64)
    return inputs


def reference_logits(mode, model, inputs, keep):
    """Run each row alone with its kept frames physically removed."""
    out = []
    for b in range(keep.shape[0]):
        idx = torch.nonzero(keep[b]).squeeze(1)
        video = inputs["video"][b : b + 1, idx]
        q = inputs["question"][b : b + 1]
        k = video.shape[1]
        if mode == "lengths":
            out.append(model(video, torch.tensor([k]), q))
        elif mode == "mask":
            out.append(model(video, torch.ones(1, k, dtype=torch.float64), q))
        else:
            out.append(model(video, q))
    return torch.cat(out, 0)


# Rows keep 3, 1, 4 and 1 frames, not as prefixes.
KEEP_UNEQUAL = torch.tensor(
    [
        [False, True, False, True, True, False],
        [False, False, False, False, False, True],
        [True, True, False, False, True, True],
        [True, False, False, False, False, False],
    ]
)

MODES = ["lengths", "mask", "bucket"]

# (mode, whether the batch carries the lengths/mask field itself)
SLICED_CASES = [
    ("lengths", True),
    ("mask", False),
    ("mask", True),
    ("bucket", True),
]


@pytest.mark.parametrize("mode", MODES)
def test_unequal_keep_matches_per_row_sliced(mode):
    adapter, model, inputs = make_adapter(mode), make_model(mode), make_inputs(mode)
    with torch.no_grad():
        got = adapter.forward_subset(model, inputs, KEEP_UNEQUAL)
        model.calls.clear()
        expected = reference_logits(mode, model, inputs, KEEP_UNEQUAL)
    assert isinstance(got, ModelOutput)
    assert got.logits.shape == (B, C)
    assert close64(got.logits, expected)


@pytest.mark.parametrize("mode", MODES)
def test_unequal_keep_without_padding_field(mode):
    # The batch carries no lengths / mask field at all: the adapter must supply one.
    adapter, model, inputs = make_adapter(mode), make_model(mode), make_inputs(mode, with_padding_field=False)
    with torch.no_grad():
        got = adapter.forward_subset(model, inputs, KEEP_UNEQUAL)
        expected = reference_logits(mode, model, inputs, KEEP_UNEQUAL)
    assert close64(got.logits, expected)


@pytest.mark.parametrize("mode", MODES)
def test_unequal_keep_on_padded_batch(mode):
    # Videos of lengths 6, 3, 5, 2 (padding frames hold garbage); keep only valid frames.
    adapter, model, inputs = make_adapter(mode), make_model(mode), make_inputs(mode)
    lengths = torch.tensor([6, 3, 5, 2])
    valid = adapter.valid_frames(inputs) if mode == "bucket" else None
    if mode == "lengths":
        inputs["lengths"] = lengths
    elif mode == "mask":
        inputs["mask"] = (torch.arange(T)[None] < lengths[:, None]).double()
    inputs["video"][torch.arange(T)[None].expand(B, T) >= lengths[:, None]] = 1e3
    keep = torch.tensor(
        [
            [True, False, False, True, True, True],
            [False, True, True, False, False, False],
            [True, False, False, False, False, False],
            [True, True, False, False, False, False],
        ]
    )
    if mode != "bucket":
        valid = adapter.valid_frames(inputs)
        assert valid.tolist() == (torch.arange(T)[None] < lengths[:, None]).tolist()
    assert bool((keep <= valid).all())
    with torch.no_grad():
        got = adapter.forward_subset(model, inputs, keep)
        expected = reference_logits(mode, model, inputs, keep)
    assert close64(got.logits, expected)


def test_plain_mean_model_really_cannot_ignore_padding():
    # Sanity check of the test model: a masked/padded run would NOT equal the per-row reference.
    model, inputs = PlainMeanModel(), make_inputs("bucket")
    with torch.no_grad():
        full = model(inputs["video"], inputs["question"])
        expected = reference_logits("bucket", model, inputs, KEEP_UNEQUAL)
    assert not torch.allclose(full, expected, atol=1e-3)


@pytest.mark.parametrize("mode", ["lengths", "mask"])
def test_lengths_and_mask_modes_call_model_once(mode):
    adapter, model, inputs = make_adapter(mode), make_model(mode), make_inputs(mode)
    with torch.no_grad():
        adapter.forward_subset(model, inputs, KEEP_UNEQUAL)
    assert len(model.calls) == 1
    if mode == "lengths":
        assert model.calls == [(B, 4, D)]  # gathered to the largest kept count
    else:
        assert model.calls == [(B, T, D)]  # mask mode keeps T


def test_bucket_mode_calls_model_once_per_distinct_count():
    adapter, model, inputs = make_adapter("bucket"), make_model("bucket"), make_inputs("bucket")
    with torch.no_grad():
        adapter.forward_subset(model, inputs, KEEP_UNEQUAL)
    # Counts 3, 1, 4, 1: three distinct counts, each group physically sliced.
    assert sorted(model.calls) == sorted([(2, 1, D), (1, 3, D), (1, 4, D)])


EQUAL_COUNT_KEEPS = {
    # the single-frame view: a length-1 input, never T frames with T-1 masked
    "single_frame": torch.nn.functional.one_hot(torch.tensor([2, 0, 5, 3]), T).bool(),
    "two_frames": torch.tensor([[True, False, True, False, False, False]] * 2
                               + [[False, False, False, True, True, False]] * 2),
}


@pytest.mark.parametrize("keep_name", list(EQUAL_COUNT_KEEPS))
@pytest.mark.parametrize("mode, with_padding_field", SLICED_CASES)
def test_equal_counts_run_once_physically_sliced(mode, with_padding_field, keep_name):
    keep = EQUAL_COUNT_KEEPS[keep_name]
    adapter, model = make_adapter(mode), make_model(mode)
    inputs = make_inputs(mode, with_padding_field=with_padding_field)
    with torch.no_grad():
        got = adapter.forward_subset(model, inputs, keep)
        assert model.calls == [(B, int(keep[0].sum()), D)]
        expected = reference_logits(mode, model, inputs, keep)
    assert close64(got.logits, expected)


@pytest.mark.parametrize("mode", MODES)
def test_row_keeping_no_frame_raises(mode):
    adapter, model, inputs = make_adapter(mode), make_model(mode), make_inputs(mode)
    keep = KEEP_UNEQUAL.clone()
    keep[2] = False
    with pytest.raises(ValueError, match="row 2"):
        adapter.forward_subset(model, inputs, keep)
    assert model.calls == []


def test_gradients_flow_through_bucket_mode():
    adapter, model, inputs = make_adapter("bucket"), make_model("bucket"), make_inputs("bucket")
    adapter.forward_subset(model, inputs, KEEP_UNEQUAL).logits.sum().backward()
    assert model.proj.weight.grad is not None and model.proj.weight.grad.abs().sum() > 0


def test_function_adapter_validates_arguments():
    with pytest.raises(ValueError):
        FunctionAdapter(lambda m, x: None, temporal={"video": 1}, subset="lengths")
    with pytest.raises(ValueError):
        FunctionAdapter(lambda m, x: None, temporal={"video": 1}, subset="mask")
    with pytest.raises(ValueError):
        FunctionAdapter(lambda m, x: None, temporal={"video": 1}, subset="pad")


# ---- select_batch ---------------------------------------------------------------------------------


def test_select_batch_indexes_per_sample_fields_and_passes_others():
    adapter = make_adapter("bucket")
    video = torch.arange(B * T).view(B, T)
    question = torch.arange(B * Q).view(B, Q)
    other_len = torch.arange(7)  # first axis is not the batch size
    scalar = torch.tensor(3.0)
    inputs = {
        "video": video,
        "question": question,
        "qid": ["a", "b", "c", "d"],
        "pair": ("w", "x", "y", "z"),
        "other_len": other_len,
        "scalar": scalar,
        "short_list": [1, 2],
        "name": "hello",
        "none": None,
    }
    rows = torch.tensor([3, 1])
    out = adapter.select_batch(inputs, rows)
    assert torch.equal(out["video"], video[[3, 1]])
    assert torch.equal(out["question"], question[[3, 1]])
    assert out["qid"] == ["d", "b"]
    assert list(out["pair"]) == ["z", "x"]
    assert out["other_len"] is other_len
    assert out["scalar"] is scalar
    assert out["short_list"] == [1, 2]
    assert out["name"] == "hello"
    assert out["none"] is None
    assert set(out) == set(inputs)


def test_select_batch_single_row_keeps_batch_axis():
    adapter = make_adapter("bucket")
    inputs = {"video": torch.randn(B, T, D), "qid": list("abcd")}
    out = adapter.select_batch(inputs, torch.tensor([2]))
    assert out["video"].shape == (1, T, D)
    assert out["qid"] == ["c"]


def test_base_adapter_forward_is_abstract():
    with pytest.raises(NotImplementedError):
        Adapter().forward(None, {})


def test_with_subset_mode_forces_a_mode_and_refuses_what_the_adapter_cannot_do():
    from sparc.adapters import FunctionAdapter, HGAAdapter

    forced = HGAAdapter().with_subset_mode("bucket")
    assert forced.mode_for(object()) == "bucket" and HGAAdapter().mode_for(object()) == "bucket"
    assert HGAAdapter().with_subset_mode("lengths").mode_for(object()) == "lengths"
    adapter = FunctionAdapter(lambda m, x: m(x["video"]), temporal={"video": 1})
    with pytest.raises(ValueError, match="no lengths_field"):
        adapter.with_subset_mode("lengths")
    with pytest.raises(ValueError, match="no mask_field"):
        adapter.with_subset_mode("mask")
    with pytest.raises(ValueError, match="unknown subset mode"):
        adapter.with_subset_mode("slice")
