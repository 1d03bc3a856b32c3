"""One picture of any trace: a panel per stage, drawn by what the stage holds.

    images (the file, the resized one, tiles)  -> the pictures
    encoder layers                              -> one panel: mean feature norm per layer
    pixel_values (.., 3, H, W)                  -> what the model sees (rescaled to [0, 1])
    one vector, one row of scores               -> its values
    features (.., N, D)                         -> norm per token: a heat map when N (or N - 1, a
                                                   [CLS] in front) is a square grid, bars coloured
                                                   by placeholder vs text for a prompt
    logits                                      -> the next-token distribution (top 10)
    ids                                         -> the tokens as text
"""
import math

import torch
from PIL import Image

MAX_PANELS = 16


def _features(value):
    """A float tensor of features -> (N,) norms per token (the first item of each leading dim)."""
    while value.dim() > 2:
        value = value[0]
    return value.float().norm(dim=-1).cpu() if value.dim() == 2 else value.float().abs().cpu()


def _panels(stages):
    """[(kind, title, payload)] in stage order, the encoder layers folded into one."""
    panels, layers = [], [s for s in stages if s.name.startswith("encoder layer")]
    placeholder = next((s.extra.get("placeholder") for s in stages if s.ids and s.extra.get("placeholder")), None)
    prompt = next((s for s in stages if s.ids and s.name == "prompt tokens"), None)
    for i, s in enumerate(stages, 1):
        title = f"{i}. {s.name} {s.shape}"
        value = s.value
        if s.name.startswith("encoder layer"):
            if s is layers[0]:
                panels.append(("layers", f"{i}. encoder layers: mean feature norm", layers))
        elif isinstance(value, Image.Image):
            panels.append(("image", title, value))
        elif isinstance(value, (list, tuple)) and value and isinstance(value[0], Image.Image):  # tiles
            panels.append(("image", title + f" (first of {len(value)})" if len(value) > 1 else title, value[0]))
        elif s.ids:
            panels.append(("text", f"{i}. {s.name}", s.note))
        elif torch.is_tensor(value) and value.is_floating_point() and s.name == "logits":
            panels.append(("logits", title, (value, s.extra.get("top_tokens"))))
        elif torch.is_tensor(value) and value.is_floating_point() and value.dim() >= 4 and value.shape[-3] == 3:
            pixels = value.reshape(-1, *value.shape[-3:])[0].float().cpu()
            pixels = (pixels - pixels.min()) / (pixels.max() - pixels.min() + 1e-12)
            panels.append(("image", title, pixels.permute(1, 2, 0).numpy()))
        elif torch.is_tensor(value) and value.is_floating_point() and (value.dim() == 1 or value.shape[-2] == 1):
            panels.append(("values", title, value.reshape(-1).float().cpu()))
        elif torch.is_tensor(value) and value.is_floating_point() and value.dim() >= 2:
            mask = None
            if prompt is not None and placeholder is not None and value.dim() == 3 and value.shape[1] == prompt.value.shape[1]:
                mask = (prompt.value[0] == placeholder).cpu()
            grid = "text" not in s.name and "decoder" not in s.name  # token rows of a text are no grid
            panels.append(("norms", title, (_features(value), mask, grid)))
    return panels[:MAX_PANELS]


def plot_stages(stages, path=None, title=None):
    """A figure with a panel per stage; saved to `path` when given. Returns the figure."""
    import matplotlib
    if path is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = _panels(stages)
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False)
    for ax, (kind, name, payload) in zip(axes.ravel(), panels):
        ax.set_title(name, fontsize=9)
        if kind == "image":
            ax.imshow(payload, interpolation="nearest")  # a 32-pixel scene stays sharp
            ax.set_xticks([])
            ax.set_yticks([])
        elif kind == "layers":
            norms = [_features(s.value).mean().item() for s in payload]
            ax.plot(range(len(norms)), norms, marker="o")
            ax.set_xlabel("layer")
        elif kind == "norms":
            norms, mask, grid = payload
            side = math.isqrt(len(norms))
            if mask is None and grid and side >= 3 and side * side in (len(norms), len(norms) - 1):  # patches
                im = ax.imshow(norms[-side * side:].reshape(side, side).numpy(), cmap="viridis")
                fig.colorbar(im, ax=ax, fraction=0.046)
                ax.set_xticks([])
                ax.set_yticks([])
            elif mask is not None:                                             # a prompt: image vs text
                ax.bar(range(len(norms)), norms.numpy(), color=["tab:orange" if m else "tab:blue" for m in mask.tolist()])
                ax.set_xlabel("position (orange: image features)")
            else:
                ax.plot(norms.numpy())
                ax.set_xlabel("token")
        elif kind == "values":
            if len(payload) <= 64:
                ax.bar(range(len(payload)), payload.numpy())
            else:
                ax.plot(payload.numpy())
            ax.set_xlabel("index")
        elif kind == "logits":
            logits, names = payload
            probs = logits.reshape(-1, logits.shape[-1])[-1].float().softmax(-1).cpu()
            top = probs.topk(min(10, len(probs)))
            ax.barh(range(len(top.values))[::-1], top.values.numpy())
            ax.set_yticks(range(len(top.values))[::-1])
            labels = names if names and len(names) >= len(top.values) else [str(i) for i in top.indices.tolist()]
            ax.set_yticklabels(labels[:len(top.values)], fontsize=7)
            ax.set_xlabel("probability of the next token")
        else:
            ax.axis("off")
            ax.text(0, 1, _wrap(payload, 44), va="top", family="monospace", fontsize=7)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=13)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=80)
        plt.close(fig)
    return fig


def _wrap(text, width):
    return "\n".join(text[i:i + width] for i in range(0, min(len(text), width * 14), width))
