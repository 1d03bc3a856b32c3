"""How the models are measured, apart from how they are trained: the recipes (minivlm/train/) and
the shipped models' held-out figures (minivlm/pretrained/) import these, so shipping a model does
not depend on the training code.

    zero_shot.py   zero-shot classification (CLIP's prompt ensembling) and its accuracy on the shapes world
    captions.py    caption quality: exact match and per-attribute accuracy of greedy captions
    retrieval.py   image-text recall@1 by ITC and with ITM re-ranking, the ITM match probability
    answers.py     the shapes LLaVA's greedy answers in its chat format, and question types
"""
