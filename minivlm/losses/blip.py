"""BLIP's three pre-training objectives (Li et al. 2022, Sec. 3.2) and its hard-negative sampler.

* ITC, image-text contrastive: unimodal image and text features, projected and L2-normalised,
  matched by a softmax over the batch at a learned temperature.
* ITM, image-text matching: the image-grounded encoder's [ENC] state classified matched / not
  matched (2 logits). Negatives are *hard*: for each image a text, and for each text an image,
  drawn with probability proportional to the softmaxed ITC similarity, never the true partner.
* LM: next-token cross-entropy of the image-grounded decoder, with label smoothing 0.1 in BLIP
  (HF reads `label_smoothing` from the text config).
"""
import torch
import torch.nn.functional as F


def itc_loss(image_feat, text_feat, temperature):
    """image_feat (N, E), text_feat (N, E), both L2-normalised; image i pairs with text i.

    loss = ( CE(sim_i2t, arange) + CE(sim_t2i, arange) ) / 2,  sim = feat_i . feat_t / temperature
    (BLIP adds momentum-distilled soft targets; this is the plain hard-target form)."""
    if image_feat.shape != text_feat.shape or image_feat.dim() != 2:
        raise ValueError(f"itc_loss needs image and text features of one shape (N, E), "
                         f"got {tuple(image_feat.shape)} and {tuple(text_feat.shape)}")
    return contrastive_loss(image_feat @ text_feat.t() / temperature)  # (N, N)


def contrastive_loss(sim_i2t):
    """sim_i2t (N, N) logits, image i's true text at column i: the mean of the image->text and
    text->image cross-entropies. BLIP-2 feeds it max-over-queries similarities (models/blip2_pretrain.py)."""
    targets = torch.arange(sim_i2t.shape[0], device=sim_i2t.device)
    return (F.cross_entropy(sim_i2t, targets) + F.cross_entropy(sim_i2t.t(), targets)) / 2


def sample_hard_negatives(sim, generator=None):
    """sim (N, N): row i's similarity to every candidate, candidate i being its true partner.

    Returns (N,) indices: for each row one candidate j != i drawn with probability
    softmax(sim_i)_j renormalised over j != i — similar-looking but wrong partners are drawn
    most often (BLIP's `weights.fill_diagonal_(0)` then `torch.multinomial`). One batched draw, no loop.
    """
    if sim.dim() != 2 or sim.shape[0] != sim.shape[1] or sim.shape[0] < 2:
        raise ValueError(f"hard-negative sampling needs a square (N, N) similarity matrix with N >= 2, "
                         f"got {tuple(sim.shape)}")
    weights = sim.detach().float().softmax(dim=1)
    weights = weights.masked_fill(torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device), 0.0)
    # A row whose off-diagonal mass underflowed to 0 would break multinomial: fall back to uniform.
    empty = weights.sum(dim=1, keepdim=True) == 0
    weights = torch.where(empty, (~torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device)).float(), weights)
    return torch.multinomial(weights, 1, generator=generator).squeeze(1)


def itm_loss(itm_logits, labels):
    """itm_logits (M, 2), labels (M,) with 1 = matched pair, 0 = not matched."""
    return F.cross_entropy(itm_logits, labels)


def lm_loss(logits, labels, label_smoothing=0.0, reduction="mean"):
    """Next-token loss: position t predicts labels[t + 1]; labels of -100 are ignored.

    logits (B, L, V), labels (B, L). Equals HF's BlipTextLMHeadModel loss (mean over kept tokens)."""
    if logits.shape[:2] != labels.shape:
        raise ValueError(f"labels must be (batch, seq_len) = {tuple(logits.shape[:2])} like the logits, "
                         f"got {tuple(labels.shape)}")
    shifted = logits[:, :-1].reshape(-1, logits.shape[-1])  # (B * (L-1), V)
    targets = labels[:, 1:].reshape(-1).to(logits.device)
    return F.cross_entropy(shifted, targets, label_smoothing=label_smoothing, reduction=reduction)
