"""Follow one sample through a model stage by stage, next to transformers' model.

    stage.py     the Stage record, the comparison against the reference, the printed table
    inputs.py    the image as read, the default image, the prompt's placeholder expansion
    capture.py   hooks that read transformers' internal tensors
    plot.py      one figure of any trace
    tiny.py      every family's seeded tiny default, built the same way; loading a folder
    families.py  --model name / config.json architecture -> the family's module
    run.py       the command's tail: load, trace, compare, print, draw
    vision.py    ViT, CLIP, SigLIP          blip.py    BLIP captioning and ITM
    blip2.py     BLIP-2, InstructBLIP       text.py    LLaMA, Mistral, Qwen2, OPT
    llava.py     LLaVA                      llava_next.py   LLaVA-NeXT (CLIP, SigLIP), OneVision
    onevision.py OneVision: several images, a video
    qwen2_vl.py  Qwen2-VL, Qwen2.5-VL (an image or a video)

`python -m minivlm trace --model NAME` runs one (minivlm/commands/trace.py).
"""
from .families import MODELS, Sample
from .plot import plot_stages
from .stage import Stage, compare, format_stages, worst_diff
