"""Qwen2-VL parity cases: tiny Qwen2VLForConditionalGeneration references over the corners of
native resolution and M-RoPE — odd grids (several sizes in one batch), two images in a prompt, a
video (one whose frames outnumber its merged rows and columns, where the text restarts below the
video's largest temporal position), image + video in one prompt, rows without any vision input,
left padding everywhere; and Qwen2.5-VL's (windows cut unevenly at odd grids, video time positions
from second_per_grid_ts or its default).

Prompts are built as the processor writes them: <|vision_start|>, one <|image_pad|> (or
<|video_pad|>) per merged token, <|vision_end|>, with mm_token_type_ids; pixels are random patches
already flattened to (N, C*T*p*p), as the processor hands them over.
"""
import torch

from .harness import ParityCase
from .llava import labels_for, real_positions

VOCAB = 90
IMAGE, VIDEO, START, END = VOCAB - 1, VOCAB - 2, VOCAB - 3, VOCAB - 4
PAD = 0
VISION = dict(depth=2, embed_dim=32, hidden_size=48, num_heads=4, mlp_ratio=2, patch_size=4,
              spatial_merge_size=2, temporal_patch_size=2)
TEXT = dict(vocab_size=VOCAB, hidden_size=48, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, rms_norm_eps=1e-5, initializer_range=0.1,  # peaked attention: position bugs show
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 3]})

# name -> (text overrides, vision overrides, per row a list of ("image" | "video", (t, h, w) patch grid)).
CONFIGS = {
    "odd-grids-batch": (dict(), dict(), [[("image", (1, 6, 10))], [("image", (1, 4, 2))], []]),
    "two-images-tied-mha": (dict(tie_word_embeddings=True, num_key_value_heads=4),
                            dict(), [[("image", (1, 2, 8)), ("image", (1, 6, 4))], [("image", (1, 2, 2))]]),
    "video-long-on-small-grid": (dict(rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                                       "mrope_section": [3, 2, 1]}),
                                 dict(depth=3), [[("video", (3, 2, 2))], [("video", (2, 4, 6))]]),
    "image-and-video-mqa": (dict(num_key_value_heads=1), dict(num_heads=2, hidden_act="gelu"),
                            [[("image", (1, 4, 6)), ("video", (2, 2, 4))], [("video", (1, 2, 2))],
                             [("image", (1, 2, 2))]]),
}


# Qwen2.5-VL: RMSNorm + SwiGLU blocks, windows of 16 px = 2 x 2 merged tokens (uneven at the grid's
# edges) on every layer but the listed full-attention ones, video time in seconds x tokens_per_second.
VISION_2_5 = dict(depth=3, hidden_size=32, out_hidden_size=48, intermediate_size=40, num_heads=4, patch_size=4,
                  spatial_merge_size=2, temporal_patch_size=2, window_size=16, fullatt_block_indexes=[1],
                  tokens_per_second=2)
CONFIGS_2_5 = {
    "2.5-windows-odd-grids": (dict(), dict(), [[("image", (1, 6, 10))], [("image", (1, 4, 2)), ("image", (1, 10, 6))]],
                              None),
    "2.5-video-seconds-and-image": (dict(num_key_value_heads=1), dict(fullatt_block_indexes=[0, 2]),
                                   [[("video", (3, 4, 6)), ("image", (1, 2, 4))], [("video", (2, 6, 2))]], [0.5, 1.5]),
    "2.5-video-default-seconds-tied": (dict(tie_word_embeddings=True), dict(window_size=8),
                                       [[("video", (2, 4, 4))]], None),
}


def build_reference(text=(), vision=(), version="2"):
    import transformers
    prefix, base = ("Qwen2VL", VISION) if version == "2" else ("Qwen2_5_VL", VISION_2_5)
    cfg = getattr(transformers, f"{prefix}Config")(
        vision_config={**base, **dict(vision)}, text_config={**TEXT, **dict(text)}, image_token_id=IMAGE,
        video_token_id=VIDEO, vision_start_token_id=START, vision_end_token_id=END,
        tie_word_embeddings=dict(text).get("tie_word_embeddings", False))
    return getattr(transformers, f"{prefix}ForConditionalGeneration")(cfg)


def vision_batch(config, generator, rows, text_lengths=(5, 3, 7)):
    """Left-padded input_ids / attention_mask / mm_token_type_ids (B, L) and the flattened patches."""
    v = config.vision_config
    merge, patch_dim = v.spatial_merge_size, v.in_channels * v.temporal_patch_size * v.patch_size ** 2
    ids_rows, type_rows, grids = [], [], {"image": [], "video": []}
    for r, items in enumerate(rows):
        n_text = text_lengths[r % len(text_lengths)]
        ids = [torch.randint(1, END, (n_text,), generator=generator)]
        types = [torch.zeros(n_text, dtype=torch.long)]
        for kind, (t, h, w) in items:
            n = t * h * w // merge ** 2
            token, code = (IMAGE, 1) if kind == "image" else (VIDEO, 2)
            ids += [torch.tensor([START]), torch.full((n,), token), torch.tensor([END]),
                    torch.randint(1, END, (2,), generator=generator)]
            types += [torch.zeros(1, dtype=torch.long), torch.full((n,), code), torch.zeros(3, dtype=torch.long)]
            grids[kind].append((t, h, w))
        ids_rows.append(torch.cat(ids))
        type_rows.append(torch.cat(types))
    longest = max(len(r) for r in ids_rows)
    batch = len(rows)
    inputs = {"input_ids": torch.full((batch, longest), PAD), "attention_mask": torch.zeros(batch, longest, dtype=torch.long),
              "mm_token_type_ids": torch.zeros(batch, longest, dtype=torch.long)}
    for i, (ids, types) in enumerate(zip(ids_rows, type_rows)):
        inputs["input_ids"][i, longest - len(ids):] = ids
        inputs["attention_mask"][i, longest - len(ids):] = 1
        inputs["mm_token_type_ids"][i, longest - len(ids):] = types
    for kind, pixels, grid in (("image", "pixel_values", "image_grid_thw"),
                               ("video", "pixel_values_videos", "video_grid_thw")):
        if grids[kind]:
            thw = torch.tensor(grids[kind])
            inputs[grid] = thw
            inputs[pixels] = torch.randn(int(thw.prod(-1).sum()), patch_dim, generator=generator)
    return inputs


def _cases(name, text, vision, rows, version="2", seconds=None):
    build = lambda: build_reference(text, vision, version)  # noqa: E731

    def make_inputs(reference, generator, with_labels):
        inputs = vision_batch(reference.config, generator, rows)
        if seconds is not None:
            inputs["second_per_grid_ts"] = torch.tensor(seconds)
        if with_labels:
            inputs["labels"] = labels_for(inputs, IMAGE)
        return inputs

    return [ParityCase("qwen2_vl", f"{name}/loss", build, lambda r, g: make_inputs(r, g, True), ("logits", "loss"),
                       valid_positions=real_positions),
            ParityCase("qwen2_vl", f"{name}/generate", build, lambda r, g: make_inputs(r, g, False), ("logits",),
                       generate=dict(max_new_tokens=8), valid_positions=real_positions)]


CASES = []
for _name, (_t, _v, _rows) in CONFIGS.items():
    CASES += _cases(_name, _t, _v, _rows)
for _name, (_t, _v, _rows, _seconds) in CONFIGS_2_5.items():
    CASES += _cases(_name, _t, _v, _rows, "2.5", _seconds)
