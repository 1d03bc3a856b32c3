"""The training objectives that are more than the models' own cross-entropy, in one place.

    contrastive.py  CLIP's softmax contrastive loss and SigLIP's sigmoid loss
    blip.py         BLIP's ITC / ITM / LM objectives and its hard-negative sampler (BLIP-2 reuses them)

The models that own a loss import it from here (models/clip.py, siglip.py, blip.py, blip_pretrain.py,
blip2_pretrain.py); the causal LM loss lives beside the LM (text/llama.py: causal_lm_loss).
"""
from .blip import contrastive_loss, itc_loss, itm_loss, lm_loss, sample_hard_negatives
from .contrastive import clip_loss, siglip_loss
