"""Image-text retrieval on the shapes world: recall@1 of a BLIP retriever by ITC cosine and with
BLIP's ITM re-ranking (Li et al. 2022, Sec. 5.1), and the ITM match probability it re-ranks with.

The BLIP recipe, CapFilt (train/capfilt.py) and the shipped shapes-blip-retrieval's held-out figures
(pretrained/heldout.py) measure with these.
"""
import torch

from ..data.shapes import EVAL_START
from ..models.blip import BlipForImageTextRetrieval

def distinct_scenes(world, split, count, start=EVAL_START):
    """`count` fresh scenes with pairwise different captions (a duplicate caption would be a second right
    answer). The held-out split has only 6 combinations x 3 positions = 18 captions with one shape."""
    scenes, seen, index = [], set(), start
    while len(scenes) < count:
        if index - start > 100 * count:
            raise ValueError(f"could not find {count} scenes with distinct captions in split {split!r}")
        scene = world.scene(index, split)
        index += 1
        if scene.caption not in seen:
            seen.add(scene.caption)
            scenes.append(scene)
    return scenes


def with_first_token(input_ids, token_id):
    """BLIP marks the image-grounded encoder's input with [ENC] in place of [CLS]."""
    ids = input_ids.clone()
    ids[:, 0] = token_id
    return ids


@torch.no_grad()
def match_probability(model: BlipForImageTextRetrieval, tokenizer, image_embeds, texts):
    """P(match) from the ITM head for each (image i, text i) pair: image_embeds (M, 1 + N, D), M texts -> (M,)."""
    tok = tokenizer(texts)
    ids = with_first_token(tok["input_ids"], tokenizer.enc_token_id)
    fused = model.text_encoder(ids, tok["attention_mask"], encoder_hidden_states=image_embeds).last_hidden_state
    return model.itm_head(fused[:, 0]).softmax(-1)[:, 1]


@torch.no_grad()
def retrieval_recall(model: BlipForImageTextRetrieval, tokenizer, world, processor, split, count=32, k=8):
    """R@1 image->text and text->image among `count` scenes with distinct captions: by ITC cosine, and
    with BLIP's re-ranking (the top-k by ITC re-scored by the ITM head, Sec. 5.1)."""
    scenes = distinct_scenes(world, split, count)
    captions = [s.caption for s in scenes]
    image_embeds = model.encode_image(processor([s.image for s in scenes])["pixel_values"]).last_hidden_state
    tok = tokenizer(captions)
    text_embeds = model.text_encoder(tok["input_ids"], tok["attention_mask"]).last_hidden_state
    image_feat, text_feat = model.image_text_features(image_embeds, text_embeds)
    sim = image_feat @ text_feat.t()  # (N images, N texts)
    truth = torch.arange(count)
    k = min(k, count)

    def rerank(sim):  # rows are queries; returns (N,) the chosen candidate per query
        top = sim.topk(k, dim=1).indices  # (N, k)
        rows = torch.arange(count).repeat_interleave(k)
        return top, rows, top.reshape(-1)

    top, rows, cols = rerank(sim)  # image queries: (image rows[j], text cols[j])
    p = match_probability(model, tokenizer, image_embeds[rows], [captions[c] for c in cols.tolist()])
    i2t_itm = top.gather(1, p.view(count, k).argmax(1, keepdim=True)).squeeze(1)
    top_t, rows_t, cols_t = rerank(sim.t())  # text queries: (text rows_t[j], image cols_t[j])
    p = match_probability(model, tokenizer, image_embeds[cols_t], [captions[r] for r in rows_t.tolist()])
    t2i_itm = top_t.gather(1, p.view(count, k).argmax(1, keepdim=True)).squeeze(1)
    return {"i2t_itc": (sim.argmax(1) == truth).float().mean().item(),
            "t2i_itc": (sim.argmax(0) == truth).float().mean().item(),
            "i2t_itm": (i2t_itm == truth).float().mean().item(),
            "t2i_itm": (t2i_itm == truth).float().mean().item(),
            "chance": 1 / count, "count": count}


# -- VQA: a short fine-tune of the pre-trained encoder + decoder --------------------------------------
