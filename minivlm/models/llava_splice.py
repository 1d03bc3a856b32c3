"""The original LLaVA convention: one placeholder per image, spliced into the embeddings.

The original repo (haotian-liu/LLaVA) tokenizes "<image>" as ONE id, IMAGE_TOKEN_INDEX = -200, an id
no vocabulary has. Before the decoder runs, each -200 is replaced by the image's N feature vectors,
so the sequence grows by N - 1 per image; the labels grow with it, IGNORE_INDEX over the image span.

    ids     [bos, U, S, E, R, :, -200, \\n, W, h, a, t ...]                    (B, L)
    embeds  [bos, U, S, E, R, :, f_1 ... f_N, \\n, W, h, a, t ...]             (B, L - 1 + N, D)
    labels  [-100 ..........................,  -100 x N, ... reply ids ...]

HF's convention (llava.py) does the growing in the processor instead: the prompt already holds N
<image> tokens and the model overwrites their embeddings. Both give the same decoder input, so the
same logits (tests/test_llava_splice.py checks it); `expand_image_tokens` turns one into the other.

Here the splice is vectorised: every token gets a width (1 for text, N_i for image i, 0 for
padding), a cumulative sum gives every token's place in the new sequence, and two scatters write
the text embeddings and the image features there. Then, like the original, the result is cut to
`max_length` and padded again — on the right for training, on the left for generation.
"""
import torch

from ..blocks.token_ids import lookup_tokens

IMAGE_TOKEN_INDEX = -200
IGNORE_INDEX = -100
DEFAULT_IMAGE_TOKEN = "<image>"


def _encode(tokenizer, text):
    ids = tokenizer.encode(text)
    return ids.tolist() if torch.is_tensor(ids) else list(ids)


def tokenizer_image_token(prompt, tokenizer, image_token_index=IMAGE_TOKEN_INDEX):
    """Text with "<image>" markers -> ids with one `image_token_index` per marker (mm_utils.py's rule).

    Each piece between markers is tokenized on its own. The tokenizer puts a bos in front of every
    piece; only the first piece keeps it, so the ids read [bos, piece 1, -200, piece 2, ...] as if
    the whole text had been tokenized once with a single bos.
    """
    bos = getattr(tokenizer, "bos_token_id", None)
    pieces = [_encode(tokenizer, chunk) for chunk in prompt.split(DEFAULT_IMAGE_TOKEN)]
    has_bos = bos is not None and bool(pieces[0]) and pieces[0][0] == bos
    ids = pieces[0][:]
    for piece in pieces[1:]:
        if has_bos and piece and piece[0] == bos:
            piece = piece[1:]
        ids += [image_token_index] + piece
    return ids


def expand_image_tokens(input_ids, num_image_tokens, image_token_id, labels=None,
                        image_token_index=IMAGE_TOKEN_INDEX):
    """The original convention -> HF's: each `image_token_index` becomes `num_image_tokens` copies of
    the vocabulary's <image> id (labels: IGNORE_INDEX). 1-D ids (list or tensor) of one sample."""
    ids = torch.as_tensor(input_ids)
    if ids.dim() != 1:
        raise ValueError(f"expand_image_tokens takes the ids of one sample (L,), got shape {tuple(ids.shape)}")
    is_image = ids == image_token_index
    repeats = torch.where(is_image, num_image_tokens, 1)  # (L,)
    out = ids.masked_fill(is_image, image_token_id).repeat_interleave(repeats)
    if labels is None:
        return out
    labels = torch.as_tensor(labels).masked_fill(is_image, IGNORE_INDEX).repeat_interleave(repeats)
    return out, labels


def splice_image_features(input_ids, image_features, embed_tokens, attention_mask=None, labels=None,
                          image_token_index=IMAGE_TOKEN_INDEX, max_length=None, padding_side="right"):
    """Replace each placeholder id by its image's features; cut to max_length; pad again.

    input_ids (B, L) with one `image_token_index` per image (padding anywhere, given by attention_mask);
    image_features: (I, N, D) or a list of I tensors (N_i, D), in reading order of the placeholders;
    embed_tokens: the LM's token embedding. Returns a dict for the decoder: inputs_embeds (B, L', D),
    attention_mask (B, L'), position_ids (B, L') counted over real tokens, labels (B, L') or None.
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    batch, length = input_ids.shape
    device = input_ids.device
    real = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    is_image = (input_ids == image_token_index) & real  # (B, L)
    features = list(image_features)
    if int(is_image.sum()) != len(features):
        raise ValueError(f"input_ids hold {int(is_image.sum())} image placeholder(s) (id {image_token_index}) "
                         f"but {len(features)} image(s) of features were given")
    sizes = torch.tensor([f.shape[0] for f in features], dtype=torch.long, device=device)  # (I,)

    # Each token's width in the new sequence and where it starts there.
    widths = real.long()
    widths[is_image] = sizes
    ends = widths.cumsum(dim=1)                       # (B, L)
    starts = ends - widths
    keep = ends[:, -1]                                 # (B,) real length after splicing
    if max_length is not None:
        keep = keep.clamp(max=max_length)             # the original truncates to model_max_length
    new_length = int(keep.max()) if batch else 0
    shift = (new_length - keep) if padding_side == "left" else torch.zeros_like(keep)  # (B,)

    text = real & ~is_image
    text_embeds = lookup_tokens(embed_tokens, input_ids.masked_fill(~text, 0))  # (B, L, D): placeholders looked up as id 0
    dim = text_embeds.shape[-1]
    rows = torch.arange(batch, device=device)[:, None].expand(batch, length)  # (B, L)
    inputs_embeds = text_embeds.new_zeros(batch, new_length, dim)
    text_kept = text & (starts < keep[:, None])
    text_pos = (starts + shift[:, None])[text_kept]
    inputs_embeds[rows[text_kept], text_pos] = text_embeds[text_kept]

    if features:
        flat = torch.cat([f.reshape(-1, dim) for f in features]).to(inputs_embeds.dtype)  # (sum N_i, D)
        # feature j of image i goes to the image's start + j, in the image's row
        within = torch.arange(flat.shape[0], device=device) - (sizes.cumsum(0) - sizes).repeat_interleave(sizes)
        f_rows = rows[is_image].repeat_interleave(sizes)
        f_start = starts[is_image].repeat_interleave(sizes) + within
        f_kept = f_start < keep[f_rows]
        inputs_embeds[f_rows[f_kept], (f_start + shift[f_rows])[f_kept]] = flat[f_kept]

    positions = torch.arange(new_length, device=device)[None, :]  # (1, L')
    new_mask = (positions >= shift[:, None]) & (positions < (shift + keep)[:, None])  # (B, L')
    out = {"inputs_embeds": inputs_embeds, "attention_mask": new_mask.long(),
           "position_ids": (positions - shift[:, None]).clamp(min=0) * new_mask, "labels": None}
    if labels is not None:
        new_labels = torch.full((batch, new_length), IGNORE_INDEX, dtype=labels.dtype, device=device)
        new_labels[rows[text_kept], text_pos] = labels[text_kept]
        out["labels"] = new_labels
    return out


def splice_inputs(model, input_ids, pixel_values=None, attention_mask=None, labels=None, max_length=None,
                  padding_side="right", image_token_index=IMAGE_TOKEN_INDEX):
    """The original repo's prepare_inputs_labels_for_multimodal for a minivlm LLaVA: image features
    from the model, spliced at the placeholders. Feed the result to model(**out) or, with
    padding_side='left', to model.generate(**out) (drop labels)."""
    features = model.get_image_features(pixel_values) if pixel_values is not None else []
    return splice_image_features(input_ids, features, model.get_input_embeddings(), attention_mask, labels,
                                 image_token_index, max_length, padding_side)
