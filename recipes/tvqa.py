"""TVQA with SpARC: train STAGE on TVQA's released features, evaluate QA accuracy on val.

    python recipes/tvqa.py --data DATA --write-frame-ids PRIORS/frame_ids_train.json   # then extract-priors
    python recipes/tvqa.py --data DATA --priors PRIORS/train --output runs/tvqa-stage
    accelerate launch recipes/tvqa.py --data DATA --priors PRIORS/train --output runs/tvqa-stage
    python recipes/tvqa.py --smoke   # end to end on generated data in the released layout

STAGE's public code (jayleicn/TVQAplus) reads only TVQA+'s (BBT) features; the paper's full-TVQA
region features are not released. This recipe is the paper's "STAGE backbone (GloVe)" (Table 6) on
what the TVQA release has: ``DATA/tvqa/`` holds ``tvqa_{train,val}.jsonl`` (jayleicn/TVQA),
``tvqa_imagenet_pool5.h5`` (ResNet-101 pool5 per 3-fps frame, read as one region per frame at
STAGE's 0.5 fps, in the phase of frame 1), ``tvqa_preprocessed_subtitles.jsonl`` (jayleicn/TVRetrieval),
``frm_cnt_cache.json`` (TVQA's frame counts) and ``glove.6B.300d.txt`` (or ``--glove``). ``PRIORS``
is the teacher's store for train over those frames (``--write-frame-ids``, then ``sparc extract-priors
--frame-ids``). Hyperparameters: ``recipes/tvqa_stage.json``. Results: QA accuracy on val in
``OUTPUT/results.json``, predictions ``{qid: answer}`` in ``OUTPUT/qid2preds_valid.json`` (TVQA's
test.py layout). Shares everything else with ``recipes/tvqaplus.py``.
"""

from tvqaplus import main

if __name__ == "__main__":
    main(benchmark="tvqa", doc=__doc__)
