"""Tests for sparc.priors.PriorStore (sharded, atomic, memory-mapped teacher priors)."""

import os
import pickle

import numpy as np
import pytest
import torch

from sparc.priors import PriorStore, PriorStoreWriter


T, C = 4, 3


def make_probs(n, frames=T, cands=C, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    x = rng.random((n, frames, cands)) + 0.05
    return (x / x.sum(-1, keepdims=True)).astype(dtype)


def qids_for(n):
    return [f"q{i}" for i in range(n)]


def dir_bytes(path):
    return {name: (path / name).read_bytes() for name in sorted(os.listdir(path))}


def write_all(path, qids, probs, shard_size, **kw):
    with PriorStore.create(path, num_candidates=C, num_frames=T, shard_size=shard_size, **kw) as w:
        for q, p in zip(qids, probs):
            w.add(q, p)
    return PriorStore.open(path)


# ---- roundtrip / lookup ---------------------------------------------------


def test_roundtrip_exact_values_and_order(tmp_path):
    qids, probs = qids_for(10), make_probs(10)
    store = write_all(tmp_path / "s", qids, probs, shard_size=100, metadata={"teacher": "blip", "k": 1})
    assert len(store) == 10
    assert list(store.qids) == qids
    assert store.num_frames == T and store.num_candidates == C
    assert store.metadata == {"teacher": "blip", "k": 1}
    out = store.lookup(qids)
    assert out.dtype == torch.float32 and out.shape == (10, T, C)
    assert np.array_equal(out.numpy(), probs)  # exact, float32 storage
    assert np.array_equal(store.get("q3"), probs[3])
    assert "q3" in store and "nope" not in store and 3.5 not in store
    assert store.lengths(["q1", "q2"]).tolist() == [T, T]


def test_lookup_across_shards_arbitrary_order_with_repeats(tmp_path):
    qids, probs = qids_for(11), make_probs(11, seed=1)
    store = write_all(tmp_path / "s", qids, probs, shard_size=3)
    assert sorted(f for f in os.listdir(tmp_path / "s") if f.endswith(".qids.json")) == [
        f"shard-{i:05d}.qids.json" for i in range(4)
    ]
    req = [10, 0, 5, 5, 3, 10, 7, 1, 0]
    out = store.lookup([qids[i] for i in req])
    assert np.array_equal(out.numpy(), probs[req])
    assert store.lookup([]).shape == (0, T, C)


def test_add_many_and_from_arrays_and_tensor_input(tmp_path):
    qids, probs = qids_for(7), make_probs(7, seed=2)
    with PriorStore.create(tmp_path / "a", num_candidates=C, num_frames=T, shard_size=3) as w:
        w.add_many(qids[:5], torch.from_numpy(probs[:5]))
        w.add_many(qids[5:], [probs[5], probs[6]])
        assert len(w.existing) == 0 and "q6" in w and w.num_added == 7
    a = PriorStore.open(tmp_path / "a")
    assert np.array_equal(a.lookup(qids).numpy(), probs)
    b = PriorStore.from_arrays(tmp_path / "b", qids, probs, shard_size=3)
    assert (b.num_frames, b.num_candidates) == (T, C)
    assert dir_bytes(tmp_path / "a") == dir_bytes(tmp_path / "b")  # same boundaries -> same bytes


def test_from_arrays_takes_a_torch_tensor_of_probabilities_and_validates_like_the_writer(tmp_path):
    """Priors a user computed themselves: [N, T, C] softmax output (torch) -> an opened store."""
    logits = torch.randn(3, T, C, generator=torch.Generator().manual_seed(0))
    store = PriorStore.from_arrays(tmp_path / "mine", ["a", "b", "c"], logits.softmax(-1))
    assert (len(store), store.num_frames, store.num_candidates) == (3, T, C)
    assert torch.allclose(store.lookup(["c", "a"]), logits.softmax(-1)[[2, 0]])
    # raw logits are refused, naming the qid, and leave nothing behind: the same call can be retried
    with pytest.raises(ValueError, match=r"qid 'a': probs has negative values .*\(field: probs\)"):
        PriorStore.from_arrays(tmp_path / "raw", ["a", "b", "c"], logits)
    assert not (tmp_path / "raw").exists()
    unnormalised = logits.exp()
    with pytest.raises(ValueError, match=r"qid 'a': probs frame 0 sums to [0-9.]+, expected 1"):
        PriorStore.from_arrays(tmp_path / "raw", ["a", "b", "c"], unnormalised)
    assert not (tmp_path / "raw").exists()
    with pytest.raises(ValueError, match=r"expected probs \[N=2, frames, candidates\]"):
        PriorStore.from_arrays(tmp_path / "raw", ["a", "b"], logits.softmax(-1))
    PriorStore.from_arrays(tmp_path / "raw", ["a", "b", "c"], logits.softmax(-1).numpy())
    with pytest.raises(FileExistsError):                 # an existing store is never removed
        PriorStore.from_arrays(tmp_path / "raw", ["d"], logits.softmax(-1)[:1])
    assert len(PriorStore.open(tmp_path / "raw")) == 3


def test_int_qids_are_strings(tmp_path):
    probs = make_probs(3)
    store = PriorStore.from_arrays(tmp_path / "s", [0, np.int64(1), "2"], probs)
    assert list(store.qids) == ["0", "1", "2"]
    assert 1 in store and "1" in store
    assert np.array_equal(store.lookup([2, "0"]).numpy(), probs[[2, 0]])
    with pytest.raises(TypeError, match="1.5"):
        store.lookup([1.5])
    with pytest.raises(TypeError, match="single str"):
        store.lookup("0")


def test_deterministic_bytes(tmp_path):
    qids, probs = qids_for(9), make_probs(9, seed=3)
    write_all(tmp_path / "a", qids, probs, shard_size=4, metadata={"b": 1, "a": 2})
    write_all(tmp_path / "b", qids, probs, shard_size=4, metadata={"a": 2, "b": 1})
    assert dir_bytes(tmp_path / "a") == dir_bytes(tmp_path / "b")


def test_pickle_reopens(tmp_path):
    qids, probs = qids_for(5), make_probs(5)
    store = write_all(tmp_path / "s", qids, probs, shard_size=2)
    clone = pickle.loads(pickle.dumps(store))
    assert len(pickle.dumps(store)) < 1000  # no data copied
    assert np.array_equal(clone.lookup(qids).numpy(), probs)


# ---- validation -------------------------------------------------------------


@pytest.fixture
def writer(tmp_path):
    w = PriorStore.create(tmp_path / "v", num_candidates=C, num_frames=T, shard_size=8)
    w.add("dup", make_probs(1)[0])
    yield w
    w.close()


def _good():
    return make_probs(1)[0].astype(np.float64)


@pytest.mark.parametrize(
    "probs, pattern",
    [
        (np.ones((T,)) / T, r"qid 'bad': probs must be \[frames, candidates\].*field: shape"),
        (make_probs(1, frames=T - 1)[0], r"qid 'bad': probs has 3 frames, store expects 4 \(field: num_frames\)"),
        (make_probs(1, frames=T + 1)[0], r"qid 'bad': probs has 5 frames, store expects 4 \(field: num_frames\)"),
        (make_probs(1, cands=C + 1)[0], r"qid 'bad': probs has 4 candidates, store expects 3 \(field: num_candidates\)"),
        (np.where(np.eye(T, C) > 0, np.nan, _good()), r"qid 'bad': probs contains NaN or inf \(field: probs\)"),
        (np.where(np.eye(T, C) > 0, np.inf, _good()), r"qid 'bad': probs contains NaN or inf"),
        (np.array([[1.5, -0.5, 0.0]] * T), r"qid 'bad': probs has negative values.*field: probs"),
        (_good() * 0.99, r"qid 'bad': probs frame 0 sums to 0\.99, expected 1.*field: probs"),
        (np.array([["a"] * C] * T), r"qid 'bad': probs has dtype.*field: probs"),
    ],
)
def test_add_validation_names_qid_and_field(writer, probs, pattern):
    with pytest.raises(ValueError, match=pattern):
        writer.add("bad", probs)
    assert "bad" not in writer


def test_row_sum_tolerance(writer):
    p = _good()
    p[0] *= 1 + 5e-4  # within atol 1e-3
    writer.add("ok", p)


def test_duplicate_and_qid_type_errors(writer):
    with pytest.raises(ValueError, match=r"qid 'dup': duplicate qid.*field: qid"):
        writer.add("dup", _good())
    with pytest.raises(ValueError, match=r"qid 'x': duplicate qid"):
        writer.add_many(["x", "x"], make_probs(2))
    assert "x" not in writer  # add_many is all-or-nothing
    with pytest.raises(TypeError, match=r"qid 1\.0: qids must be str or int"):
        writer.add(1.0, _good())
    with pytest.raises(ValueError, match=r"qid ''"):
        writer.add("", _good())
    with pytest.raises(ValueError, match=r"qid 'b'.*NaN"):
        bad = make_probs(3)
        bad[1, 0, 0] = np.nan
        writer.add_many(["a", "b", "c"], bad)
    assert "a" not in writer
    with pytest.raises(ValueError, match=r"add_many: expected probs \[N=2"):
        writer.add_many(["a", "b"], make_probs(3))


def test_closed_writer_rejects_adds(tmp_path):
    w = PriorStore.create(tmp_path / "s", num_candidates=C, num_frames=T)
    w.close()
    with pytest.raises(RuntimeError, match="closed"):
        w.add("a", _good())


def test_bad_create_args(tmp_path):
    with pytest.raises(ValueError, match="dtype"):
        PriorStore.create(tmp_path / "a", num_candidates=C, num_frames=T, dtype="int8")
    with pytest.raises(ValueError, match="num_frames"):
        PriorStore.create(tmp_path / "b", num_candidates=C, num_frames=0)
    with pytest.raises(TypeError, match="JSON"):
        PriorStore.create(tmp_path / "c", num_candidates=C, num_frames=T, metadata={"x": object()})


# ---- exceptions inside the with-block still flush ---------------------------


def test_exception_in_with_block_keeps_added_rows(tmp_path):
    qids, probs = qids_for(5), make_probs(5)
    with pytest.raises(RuntimeError, match="boom"):
        with PriorStore.create(tmp_path / "s", num_candidates=C, num_frames=T, shard_size=3) as w:
            for q, p in zip(qids, probs):
                w.add(q, p)
            raise RuntimeError("boom")
    store = PriorStore.open(tmp_path / "s")
    assert np.array_equal(store.lookup(qids).numpy(), probs)


# ---- kill / resume ----------------------------------------------------------


def test_resume_after_kill_is_byte_identical(tmp_path):
    n, shard = 11, 4
    qids, probs = qids_for(n), make_probs(n, seed=4)
    meta = {"teacher": "t"}
    ref = tmp_path / "ref"
    write_all(ref, qids, probs, shard_size=shard, metadata=meta)

    # "Killed" writer: two shards committed, rows 8..9 only buffered (never
    # closed), and it died mid-flush of shard 2: tmp npy + a renamed .npy
    # whose qids file never landed.
    run = tmp_path / "run"
    w = PriorStore.create(run, num_candidates=C, num_frames=T, shard_size=shard, metadata=meta)
    for q, p in zip(qids[:10], probs[:10]):
        w.add(q, p)
    del w  # no close(): a killed process flushes nothing
    (run / ".tmp-shard-00002.npy").write_bytes(b"garbage")
    (run / "shard-00002.npy").write_bytes(b"partial")
    (run / ".tmp-shard-00002.qids.json").write_bytes(b"[")

    partial = PriorStore.open(run)  # open ignores temp / incomplete shard files
    assert list(partial.qids) == qids[:8]
    assert (run / ".tmp-shard-00002.npy").exists()  # ...and leaves them alone
    del partial

    with PriorStore.create(run, num_candidates=C, num_frames=T, shard_size=shard, resume=True) as w:
        assert w.existing == frozenset(qids[:8])
        with pytest.raises(ValueError, match=r"qid 'q3': duplicate qid \(in the store"):
            w.add("q3", probs[3])
        for q, p in zip(qids, probs):
            if q not in w.existing:
                w.add(q, p)
    assert dir_bytes(run) == dir_bytes(ref)
    assert np.array_equal(PriorStore.open(run).lookup(qids).numpy(), probs)


def test_resume_on_missing_store_creates_it(tmp_path):
    with PriorStore.create(tmp_path / "s", num_candidates=C, num_frames=T, resume=True) as w:
        assert w.existing == frozenset()
        w.add("a", _good())
    assert "a" in PriorStore.open(tmp_path / "s")


def test_create_existing_without_resume_raises(tmp_path):
    write_all(tmp_path / "s", ["a"], make_probs(1), shard_size=4)
    with pytest.raises(FileExistsError, match="pass resume=True"):
        PriorStore.create(tmp_path / "s", num_candidates=C, num_frames=T)
    # An existing empty directory is fine.
    (tmp_path / "empty").mkdir()
    PriorStore.create(tmp_path / "empty", num_candidates=C, num_frames=T).close()


@pytest.mark.parametrize(
    "kw, field",
    [
        ({"num_frames": T + 1}, "num_frames"),
        ({"num_candidates": C + 1}, "num_candidates"),
        ({"dtype": "float16"}, "dtype"),
        ({"pad_frames": True}, "pad_frames"),
        ({"metadata": {"teacher": "other"}}, "metadata"),
    ],
)
def test_resume_manifest_mismatch_raises(tmp_path, kw, field):
    write_all(tmp_path / "s", ["a"], make_probs(1), shard_size=4, metadata={"teacher": "t"})
    args = dict(num_candidates=C, num_frames=T, resume=True)
    args.update(kw)
    with pytest.raises(ValueError, match=rf"cannot resume.*field: {field}"):
        PriorStore.create(tmp_path / "s", **args)


def test_open_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no prior store"):
        PriorStore.open(tmp_path / "none")
    store = write_all(tmp_path / "s", ["a", "b"], make_probs(2), shard_size=1)
    with pytest.raises(KeyError, match=r"qid 'zz' not in prior store .*s'"):
        store.lookup(["a", "zz"])
    with pytest.raises(KeyError, match="'zz'"):
        store.get("zz")
    # Duplicate qid across shards (hand-corrupted store).
    (tmp_path / "s" / "shard-00001.qids.json").write_text('["a"]\n')
    with pytest.raises(ValueError, match=r"qid 'a' appears twice.*shard-00000 and shard-00001"):
        PriorStore.open(tmp_path / "s")


def test_lookup_expectations_mismatch(tmp_path):
    store = write_all(tmp_path / "s", ["a", "b"], make_probs(2), shard_size=4)
    assert store.lookup(["b"], num_frames=T, num_candidates=C).shape == (1, T, C)
    with pytest.raises(ValueError, match=r"qid 'b'.*num_frames=4, caller expects 8 \(field: num_frames\)"):
        store.lookup(["b", "a"], num_frames=8)
    with pytest.raises(ValueError, match=r"qid 'a'.*\(field: num_candidates\)"):
        store.lookup(["a"], num_candidates=5)


# ---- pad_frames / float16 ---------------------------------------------------


def test_pad_frames_lengths(tmp_path):
    short = make_probs(1, frames=2, seed=5)[0]
    full = make_probs(1, seed=6)[0]
    with PriorStore.create(tmp_path / "s", num_candidates=C, num_frames=T, shard_size=2,
                           pad_frames=True) as w:
        w.add("short", short)
        w.add("full", full)
        w.add_many(["one", "three"], [make_probs(1, frames=1)[0], make_probs(1, frames=3)[0]])
        with pytest.raises(ValueError, match=r"qid 'long': probs has 5 frames, store expects at most 4"):
            w.add("long", make_probs(1, frames=5)[0])
    store = PriorStore.open(tmp_path / "s")
    assert store.pad_frames
    probs, lengths = store.lookup(["full", "short", "three", "one", "short"], return_lengths=True)
    assert lengths.dtype == torch.int64 and lengths.tolist() == [4, 2, 3, 1, 2]
    assert store.lengths(["one"]).tolist() == [1]
    assert np.array_equal(probs[1, :2].numpy(), short)
    assert torch.all(probs[1, 2:] == 0)
    assert np.array_equal(probs[0].numpy(), full)
    # The row-sum check only covers valid rows (padded zeros are fine).
    assert torch.allclose(probs[2, :3].sum(-1), torch.ones(3))


def test_short_input_without_pad_frames_mentions_option(tmp_path):
    with PriorStore.create(tmp_path / "s", num_candidates=C, num_frames=T) as w:
        with pytest.raises(ValueError, match=r"qid 'q': .*\(field: num_frames\); .*pad_frames=True"):
            w.add("q", make_probs(1, frames=2)[0])


def test_float16_storage(tmp_path):
    qids, probs = qids_for(6), make_probs(6, seed=7)
    store = PriorStore.from_arrays(tmp_path / "s", qids, probs, dtype="float16", shard_size=4)
    assert store.dtype == "float16"
    assert np.load(tmp_path / "s" / "shard-00000.npy").dtype == np.float16
    out = store.lookup(qids[::-1])
    assert out.dtype == torch.float32
    assert np.array_equal(out.numpy(), probs[::-1].astype(np.float16).astype(np.float32))
    assert np.array_equal(store.get("q2"), probs[2].astype(np.float16).astype(np.float32))
    # Row-sum validation happens on the float64 values, before the cast.
    with PriorStore.create(tmp_path / "t", num_candidates=C, num_frames=T, dtype="float16") as w:
        with pytest.raises(ValueError, match=r"qid 'q'.*sums to"):
            w.add("q", probs[0] * 1.01)


def test_writer_is_exported():
    assert PriorStoreWriter.__name__ == "PriorStoreWriter"


# ---- flush / abandon / move_shards (what extract-priors builds on) --------


def test_flush_cuts_a_shard_and_abandon_drops_the_buffer(tmp_path):
    probs = make_probs(5)
    w = PriorStore.create(tmp_path / "s", num_candidates=C, num_frames=T, shard_size=100)
    w.add_many(qids_for(2), probs[:2])
    w.flush()
    w.add_many(qids_for(5)[2:], probs[2:])
    w.abandon()
    store = PriorStore.open(tmp_path / "s")
    assert list(store.qids) == ["q0", "q1"]
    assert sorted(os.listdir(tmp_path / "s")) == ["shard-00000.npy", "shard-00000.qids.json", "store.json"]


def test_move_shards_appends_renumbered_and_survives_a_kill(tmp_path):
    from sparc.priors.store import move_shards

    probs = make_probs(6)
    write_all(tmp_path / "dest", qids_for(6)[:2], probs[:2], shard_size=2)
    part = write_all(tmp_path / "part", qids_for(6)[2:], probs[2:], shard_size=2)
    assert len(part) == 4
    # a kill after the first data file was linked, before its qids file moved: still only in `part`
    os.link(tmp_path / "part" / "shard-00000.npy", tmp_path / "dest" / "shard-00001.npy")
    assert len(PriorStore.open(tmp_path / "dest")) == 2
    assert move_shards(tmp_path / "part", tmp_path / "dest") == 2
    assert not (tmp_path / "part").exists()
    merged = PriorStore.open(tmp_path / "dest")
    assert list(merged.qids) == qids_for(6)
    assert np.array_equal(merged.lookup(qids_for(6)).numpy(), probs)
    # the same qid in both stores, or another shape, is refused
    write_all(tmp_path / "again", ["q0"], probs[:1], shard_size=2)
    with pytest.raises(ValueError, match="qid 'q0'.*field: qid"):
        move_shards(tmp_path / "again", tmp_path / "dest")
    with PriorStore.create(tmp_path / "wide", num_candidates=C + 1, num_frames=T) as w:
        w.add("z", np.full((T, C + 1), 1.0 / (C + 1)))
    with pytest.raises(ValueError, match="num_candidates"):
        move_shards(tmp_path / "wide", tmp_path / "dest")
