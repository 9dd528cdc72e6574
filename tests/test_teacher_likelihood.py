"""The pieces ALBEF's and BLIP's teachers share (sparc.teachers.likelihood), checked by hand."""

import torch

from sparc.teachers.likelihood import IMAGE_MEAN, IMAGE_STD, ids_and_mask, pad_sequences, preprocess_frames


def test_preprocess_resizes_and_normalises_uint8_frames_in_either_layout():
    white = torch.full((2, 3, 3, 3), 255, dtype=torch.uint8)            # [F, H, W, 3]
    out = preprocess_frames(white, image_res=4)
    assert out.shape == (2, 3, 4, 4)
    expected = torch.tensor([(1 - m) / s for m, s in zip(IMAGE_MEAN, IMAGE_STD)])
    torch.testing.assert_close(out[0, :, 0, 0], expected)               # bicubic overshoot clamped to 1
    torch.testing.assert_close(preprocess_frames(white.permute(0, 3, 1, 2), 4), out)   # [F, 3, H, W]
    already = torch.randn(1, 3, 4, 4)
    assert preprocess_frames(already, 4) is already                     # float frames pass through


def test_pad_sequences_and_masks():
    ids, mask = pad_sequences([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    got_ids, got_mask = ids_and_mask(ids, pad_id=0)
    assert torch.equal(got_ids, ids) and torch.equal(got_mask, mask)
    explicit = (ids, torch.ones_like(ids))
    assert ids_and_mask(explicit, pad_id=0) is explicit
