"""M-RoPE positions (Qwen2-VL, Wang et al. 2024 §2.1): three position ids per token.

A text token at position p gets (p, p, p): plain 1-D RoPE. An image of grid (t, h, w) patches,
merged m x m, is t x h/m x w/m tokens; the one at (ti, hi, wi) gets (s + ti, s + hi, s + wi), s being
the position the image starts at. The text after it continues at s + max(h, w) / m, one past the
image's largest height/width position (transformers' Qwen2VLModel.get_rope_index: the temporal
index is not counted there, so a long video on a small grid can reach past the next text position —
we mirror that). A video is the same with t temporal slices.

Left padding is skipped: positions are counted over real tokens only; padded slots get 0.
"""
import torch

TEXT, IMAGE, VIDEO = 0, 1, 2  # HF's mm_token_type_ids values


def token_types(input_ids, image_token_id, video_token_id):
    """mm_token_type_ids from the placeholder ids, where the processor did not give them: (B, L)."""
    types = torch.zeros_like(input_ids)
    types[input_ids == image_token_id] = IMAGE
    types[input_ids == video_token_id] = VIDEO
    return types


def vision_positions(start, grid, merge, time_interval=1):
    """(3, t * h/m * w/m) positions of one image/video's tokens, in the merger's output order.
    time_interval (Qwen2.5-VL's videos): slice k sits at int(k * interval) in time, i.e. at its
    timestamp in seconds x tokens_per_second, so videos sampled at other rates stay comparable."""
    t, h, w = grid
    slices = (torch.arange(t) * time_interval).long()
    ti, hi, wi = torch.meshgrid(slices, torch.arange(h // merge), torch.arange(w // merge), indexing="ij")
    return torch.stack([ti, hi, wi]).reshape(3, -1) + start


def runs(types):
    """[(type, start, end)] of the maximal runs of equal values in a list."""
    out, start = [], 0
    for i in range(1, len(types) + 1):
        if i == len(types) or types[i] != types[start]:
            out.append((types[start], start, i))
            start = i
    return out


def rope_index(mm_token_type_ids, image_grid_thw=None, video_grid_thw=None, attention_mask=None, merge=2,
               tokens_per_second=None, second_per_grid_ts=None):
    """-> position_ids (3, B, L) and rope_deltas (B, 1) = largest position + 1 - real length
    (how far M-RoPE runs ahead of a plain count; HF keeps it for decoding past the prompt).

    Images and videos are consumed in reading order across the batch, as the processor lists them.
    tokens_per_second (Qwen2.5-VL): video slices are spaced tokens_per_second * second_per_grid_ts[v]
    apart in time (seconds per slice, 1 when not given, as HF); None (Qwen2-VL): 1 apart."""
    seconds = iter([] if second_per_grid_ts is None else list(second_per_grid_ts))
    batch, length = mm_token_type_ids.shape
    grids = {IMAGE: iter([] if image_grid_thw is None else image_grid_thw.tolist()),
             VIDEO: iter([] if video_grid_thw is None else video_grid_thw.tolist())}
    names = {IMAGE: "image", VIDEO: "video"}
    position_ids = torch.zeros(3, batch, length, dtype=torch.long)
    deltas = []
    for b in range(batch):
        real = attention_mask[b].bool().cpu() if attention_mask is not None else torch.ones(length, dtype=torch.bool)
        types = mm_token_type_ids[b].cpu()[real].tolist()
        pieces, pos = [], 0
        for kind, start, end in runs(types):
            if kind == TEXT:
                pieces.append(torch.arange(end - start).expand(3, -1) + pos)
                pos += end - start
                continue
            at = start  # a run of placeholders: one or more images/videos back to back
            while at < end:
                grid = next(grids[kind], None)
                if grid is None:
                    raise ValueError(f"row {b} holds more {names[kind]} tokens than the {names[kind]}_grid_thw "
                                     f"given describe")
                interval = 1
                if kind == VIDEO and tokens_per_second is not None:
                    interval = tokens_per_second * next(seconds, 1)
                pieces.append(vision_positions(pos, grid, merge, interval))
                at += pieces[-1].shape[1]
                pos += max(grid[1], grid[2]) // merge
            if at != end:
                raise ValueError(f"row {b}: a run of {end - start} {names[kind]} tokens does not match the "
                                 f"grids it was given ({at - start} tokens)")
        row = torch.cat(pieces, dim=1) if pieces else torch.zeros(3, 0, dtype=torch.long)
        position_ids[:, b, real] = row
        deltas.append((int(row.max()) + 1 if row.numel() else 0) - len(types))
    device = mm_token_type_ids.device
    return position_ids.to(device), torch.tensor(deltas, device=device)[:, None]
