"""The two image-text losses: CLIP's softmax contrastive loss and SigLIP's sigmoid loss.

Both take `logits_per_text`, the (N, N) matrix of scaled similarities between the N texts (rows)
and the N images (columns) of a batch, where text i belongs with image i (the diagonal).
"""
import torch
import torch.nn.functional as F


def _check_square(logits_per_text, name):
    if logits_per_text.dim() != 2 or logits_per_text.shape[0] != logits_per_text.shape[1]:
        raise ValueError(f"{name} needs a square (texts, images) logit matrix with text i paired to image i, "
                         f"got shape {tuple(logits_per_text.shape)}")


def clip_loss(logits_per_text):
    """Symmetric cross-entropy of CLIP (Radford et al. 2021, Figure 3), equal to HF's CLIPModel loss.

    Each text classifies which of the N images is its own (softmax over a row), each image which of
    the N texts is its own (softmax over a column); the loss is the mean of the two.

        loss = ( CE(logits_per_text, arange(N)) + CE(logits_per_text^T, arange(N)) ) / 2
    """
    _check_square(logits_per_text, "clip_loss")
    targets = torch.arange(logits_per_text.shape[0], device=logits_per_text.device)
    text_loss = F.cross_entropy(logits_per_text, targets)       # text -> image
    image_loss = F.cross_entropy(logits_per_text.t(), targets)  # image -> text
    return (text_loss + image_loss) / 2


def siglip_loss(logits_per_text):
    """Sigmoid loss of SigLIP (Zhai et al. 2023, Algorithm 1), equal to HF's SiglipModel loss.

    Every (text, image) pair is its own binary problem: label +1 on the diagonal, -1 elsewhere
    (labels = 2 I - 1). `logits_per_text` already holds t * cos + b, so a negative bias b makes
    the many negative pairs cheap at the start of training.

        loss = - sum_ij log sigmoid(label_ij * logit_ij) / N

    Normalised by the batch size N, not by the N^2 pairs, as the paper and big_vision do.
    """
    _check_square(logits_per_text, "siglip_loss")
    n = logits_per_text.shape[0]
    labels = 2 * torch.eye(n, device=logits_per_text.device, dtype=logits_per_text.dtype) - 1  # (N, N)
    return -F.logsigmoid(labels * logits_per_text).sum() / n
