"""HGA (doc-doc/NExT-QA): its demo size, and the builder of its original-code fixture
(``fixtures/original/hga``)."""

from __future__ import annotations

from typing import Any, Dict

import torch

from sparc.backbones import BACKBONES
from sparc.backbones.base import DemoBackbone, qa_batch


def build_hga(bench, hidden: int):
    """A small HGA (hidden sizes shrunk from the paper's 256 so the demo runs on a laptop CPU; no
    dropout: the budget is far too short to overfit)."""
    from sparc.adapters.hga import HGA, EncoderQns, EncoderVidHGA

    vid = EncoderVidHGA(dim_vid=bench.config.feature_dim, dim_hidden=hidden, input_dropout_p=0.0, rnn_cell="gru")
    qns = EncoderQns(dim_embed=hidden, dim_hidden=hidden, vocab_size=1, glove_embed=None, use_bert=True,
                     input_dropout_p=0.0, rnn_cell="gru")
    return HGA(vid, qns, device="cpu", block_kwargs={"mm_dim": 2 * hidden, "chunks": 4, "rank": 4})


def hga_adapter():
    from sparc.adapters.hga import HGAAdapter

    return HGAAdapter()


def fixture_model(config: Dict[str, Any]):
    """The reference HGA of a fixture's ``config.json`` and how to run it on its inputs."""
    from sparc.adapters.hga import HGA, EncoderQns, EncoderVidHGA
    from sparc.recorded_calls import check_callee, parse_call

    dims = config.get("dims", {})
    ctor = config.get("constructor", {})
    if "vid_encoder" in ctor:
        callee, args, kwargs = parse_call(ctor["vid_encoder"])
        check_callee(callee, "EncoderVidHGA")
        vid_encoder = EncoderVidHGA(*args, **kwargs)
    else:
        vid_encoder = EncoderVidHGA(dims["vid_dim"], dims["hidden_dim"])
    if "qns_encoder" in ctor:
        callee, args, kwargs = parse_call(ctor["qns_encoder"])
        check_callee(callee, "EncoderQns")
        qns_encoder = EncoderQns(*args, **kwargs)
    else:
        qns_encoder = EncoderQns(
            dims["word_dim"], dims["hidden_dim"], dims.get("vocab_size", 4000), None, True
        )
    if "model" in ctor:
        check_callee(parse_call(ctor["model"])[0], "HGA")
    block_kwargs = ctor.get("block_fusion_overrides", dims.get("block"))
    model = HGA(vid_encoder, qns_encoder, torch.device("cpu"), block_kwargs=block_kwargs)

    def run(model, inputs):
        out, predict_idx = model(inputs["vid_feats"], inputs["qas"], inputs["qas_lengths"])
        # The reference model fixes the original's co-attention masks, so it reproduces the
        # fixture's run with length masks ("*_intended_masks"), not the original's `out`.
        return {"out_intended_masks": out, "predict_idx_intended_masks": predict_idx}

    return model, run


BACKBONES.register("hga", title="HGA", demo=DemoBackbone(build_hga, hga_adapter, qa_batch, views=False),
                   fixtures={"HGA": fixture_model})
