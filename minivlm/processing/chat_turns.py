"""A processor's apply_chat_template: the folder's template over the conversation (chat_template.py
renders it), then — with tokenize=True — the prompt and the images named in the messages through
the processor, as transformers' ProcessorMixin.apply_chat_template does.

    conversation = [{"role": "user", "content": [{"type": "image", "image": pil_or_path},
                                                 {"type": "text", "text": "What is this?"}]}]
    processor.apply_chat_template(conversation, add_generation_prompt=True)            # the prompt string
    processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True,
                                  return_dict=True, return_tensors="pt")             # the model's inputs

An image part names its picture by "image" (a PIL image, array or path), "path" or "url" (a local
path; minivlm downloads nothing). A list of conversations renders each, and batches them.
return_assistant_tokens_mask: the template's {% generation %} spans, moved as the placeholders before
them grew into image-token runs, marked on every token they overlap (assistant_masks).
"""
import bisect

import torch

from .chat_template import pick_template, render_with_spans
from .offsets import tokenize_with_offsets

SPECIAL_NAMES = ("bos_token", "eos_token", "unk_token", "pad_token")


def media_of(conversation, kind):
    """The pictures (or videos) a conversation's typed parts carry, in reading order."""
    found = []
    for message in conversation:
        content = message.get("content") if isinstance(message, dict) else None
        for part in content if isinstance(content, (list, tuple)) else []:
            if not isinstance(part, dict) or part.get("type") != kind:
                continue
            source = next((part[k] for k in (kind, "path", "url") if part.get(k) is not None), None)
            if isinstance(source, str) and source.startswith(("http://", "https://")):
                raise ValueError(f"the {kind} part names a URL ({source}); minivlm downloads nothing: save the file "
                                 f"and give its path, or pass the {kind} itself")
            if source is not None:
                found.append(source)
    return found


def apply_chat_template(processor, conversation, chat_template=None, add_generation_prompt=False,
                        continue_final_message=False, tokenize=False, return_dict=False, return_tensors=None,
                        return_assistant_tokens_mask=False, processor_kwargs=None, template_kwargs=None):
    if return_assistant_tokens_mask and not (tokenize and return_dict):
        raise ValueError("return_assistant_tokens_mask=True needs tokenize=True and return_dict=True")
    template = pick_template(processor.chat_template, chat_template, (template_kwargs or {}).get("tools"),
                             owner="processor")
    batched = isinstance(conversation, (list, tuple)) and bool(conversation) and \
        isinstance(conversation[0], (list, tuple))
    conversations = list(conversation) if batched else [conversation]
    tokenizer = processor.tokenizer
    specials = {name: getattr(tokenizer, name) for name in SPECIAL_NAMES if getattr(tokenizer, name, None)}
    rendered = [render_with_spans(template, c, add_generation_prompt=add_generation_prompt,
                                  continue_final_message=continue_final_message, track=return_assistant_tokens_mask,
                                  **{**specials, **(template_kwargs or {})}) for c in conversations]
    prompts = [r.text for r in rendered]
    if not tokenize:
        return prompts if batched else prompts[0]

    kwargs = dict(processor_kwargs or {})
    if tokenizer.bos_token is not None and prompts[0].startswith(tokenizer.bos_token):
        kwargs["add_special_tokens"] = False  # the template wrote <s> already (HF's rule)
    images = [media_of(c, "image") for c in conversations]
    videos = [v for c in conversations for v in media_of(c, "video")]
    out = processor(text=prompts, images=images if any(images) else None, videos=videos or None,
                    return_tensors=return_tensors, return_text_replacement_offsets=return_assistant_tokens_mask,
                    **kwargs)
    if return_assistant_tokens_mask:
        masks = assistant_masks(processor, rendered, out, kwargs)
        out["assistant_masks"] = torch.tensor(masks) if return_tensors == "pt" else masks
    return out if return_dict else out["input_ids"]


def assistant_masks(processor, rendered, out, kwargs):
    """1 on every token whose characters overlap a {% generation %} block (HF's processor rule), the
    blocks' character spans first moved as the placeholders before them grew into image-token runs."""
    tokenizer = processor.tokenizer
    moved_rows = out.pop("text_replacement_offsets")
    add_special = kwargs.get("add_special_tokens", True)
    side = kwargs.get("padding_side") or tokenizer.padding_side
    masks = []
    for r, ids, attention, moved in zip(rendered, out["input_ids"], out["attention_mask"], moved_rows):
        ids, real = list(ids), int(sum(attention))
        expanded = r.text
        for m in reversed(moved):  # right to left: earlier spans stay valid
            expanded = expanded[:m["span"][0]] + m["replacement"] + expanded[m["span"][1]:]
        spans = [(a, b) for _, a, b in tokenize_with_offsets(tokenizer, expanded)]
        if add_special:  # bos / eos cover no characters
            n_text = real - tokenizer.num_special_tokens()
            spans = spans[:n_text] if tokenizer.truncation_side != "left" else spans[len(spans) - n_text:]
            spans = [s for item in tokenizer.template for s in (spans if item == "A" else [(0, 0)])]
        else:
            spans = spans[:real] if tokenizer.truncation_side != "left" else spans[len(spans) - real:]
        if len(spans) != real:
            raise ValueError(f"assistant masks: {type(processor).__name__} puts tokens the text does not hold "
                             f"({real} tokens, {len(spans)} from the text); not supported for this processor")
        pad = [(0, 0)] * (len(ids) - real)
        spans = pad + spans if side == "left" else spans + pad
        ends = [m["span"][1] for m in moved]
        gained = [0] + [m["new_span"][1] - m["span"][1] for m in moved]  # cumulative, as HF's chars_gained
        mask = [0] * len(ids)
        for start, end in r.generation_spans:
            start, end = (c + gained[bisect.bisect_right(ends, c)] for c in (start, end))
            for i, (a, b) in enumerate(spans):
                if a < end and b > start:
                    mask[i] = 1
        masks.append(mask)
    return masks
