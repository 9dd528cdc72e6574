"""MSVD-QA with SpARC: train memory-attention (Cai et al., IJCAI 2020) on Xu et al.'s released
questions and features, evaluate on test with the official accuracy (overall and per question word).

    python recipes/msvdqa.py --data DATA --priors PRIORS/train --output runs/msvdqa
    accelerate launch recipes/msvdqa.py --data DATA --priors PRIORS/train --output runs/msvdqa
    python recipes/msvdqa.py --data DATA --techniques plain --output runs/msvdqa-plain
    python recipes/msvdqa.py --smoke     # end to end on generated data, seconds

``DATA`` holds the release's ``{train,val,test}_qa.json`` and ``video_feature_20.h5`` (``/vgg``,
``/c3d`` ``(videos, 20, 4096)``, row = video_id - 1). ``PRIORS`` is the teacher's store for train
(``sparc extract-priors --questions DATA/train_qa.json --answers-from DATA/train_qa.json
--num-frames 20``, frames named vid<video_id>); when given, its answer list is the model's classes
(also for ``--techniques plain``), else the configuration's (the 1000 most frequent train answers).
Train questions whose answer is outside the set are dropped; val and test keep theirs, scored wrong.
``--techniques`` is ``sparc`` (+T+S, default) or ``plain``: the questions are word ids, which
TemporalGuidedMixup cannot interpolate. Hyperparameters come from ``recipes/msvdqa.json`` (each with its
source); flags override them. A killed run resumes from its newest checkpoint when started again
with the same ``--output``. ``OUTPUT/results.json`` holds the test accuracy (``overall``, ``what``,
``who``, ``how``, ``when``, ``where``), the same on val, the curve and the configuration;
``OUTPUT/predictions.json`` is ``{qid: {"prediction": answer word, "answer"}}`` (``msqa_accuracy``
reads it), ``answers.json`` the answer set in class order.
"""

# recipes/memory_attention.py, found because python puts a script's folder on sys.path
from memory_attention import msqa_main


def main(argv=None) -> dict:
    return msqa_main("msvd", __doc__, argv)


if __name__ == "__main__":
    main()
