"""A tokenizer's apply_chat_template: messages -> the folder's template -> text -> ids (+ the
assistant mask), with transformers' arguments and results.

    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)
    batch = tok.apply_chat_template([chat1, chat2], padding=True, return_tensors="pt",
                                    return_assistant_tokens_mask=True)
    batch["assistant_masks"]      # 1 on the tokens of the template's {% generation %} blocks

The rendering is chat_template.py's; the characters of the {% generation %} blocks become tokens
through the tokenizer's offsets (offsets.py), as transformers' BatchEncoding.char_to_token does.
"""
import torch

from .chat_template import pick_template, render_with_spans
from .offsets import char_to_token, tokenize_with_offsets


def apply_chat_template(tokenizer, conversation, tools=None, documents=None, chat_template=None,
                        add_generation_prompt=False, continue_final_message=False, tokenize=True, padding=False,
                        truncation=False, max_length=None, return_tensors=None, return_dict=True,
                        return_assistant_tokens_mask=False, tokenizer_kwargs=None, **template_kwargs):
    """transformers' PreTrainedTokenizerBase.apply_chat_template: one conversation (a list of
    message dicts) or a batch of them. tokenize=False gives the rendered string(s); otherwise a
    dict (return_dict, the default in transformers 5) of input_ids, attention_mask and, when asked,
    assistant_masks, or the ids alone. template_kwargs reach the template, with the tokenizer's
    special tokens (bos_token, eos_token, ...) as defaults."""
    if not tokenize:
        return_dict = False
    if return_assistant_tokens_mask and not (tokenize and return_dict):
        raise ValueError("return_assistant_tokens_mask=True needs tokenize=True and return_dict=True")
    if continue_final_message and return_assistant_tokens_mask:
        raise ValueError("continue_final_message cannot be combined with return_assistant_tokens_mask")
    template = pick_template(tokenizer.chat_template, chat_template, tools)
    if isinstance(conversation, (list, tuple)) and not conversation:
        raise ValueError("cannot apply a chat template to an empty conversation: give at least one message")
    batched = isinstance(conversation, (list, tuple)) and isinstance(conversation[0], (list, tuple))
    conversations = conversation if batched else [conversation]
    variables = {**tokenizer.special_tokens_map, **template_kwargs}
    rendered = [render_with_spans(template, chat, add_generation_prompt=add_generation_prompt,
                                  continue_final_message=continue_final_message, tools=tools, documents=documents,
                                  track=return_assistant_tokens_mask, **variables)
                for chat in conversations]
    texts = [r.text for r in rendered]
    if not tokenize:
        return texts if batched else texts[0]

    out = tokenizer(texts if batched else texts[0], padding=padding, truncation=truncation, max_length=max_length,
                    add_special_tokens=False, return_tensors=return_tensors, **(tokenizer_kwargs or {}))
    if not return_dict:
        return out["input_ids"]
    if return_assistant_tokens_mask:
        ids = out["input_ids"] if (batched or return_tensors) else [out["input_ids"]]
        masks = out["attention_mask"] if (batched or return_tensors) else [out["attention_mask"]]
        side = (tokenizer_kwargs or {}).get("padding_side") or tokenizer.padding_side
        trunc_side = (tokenizer_kwargs or {}).get("truncation_side") or tokenizer.truncation_side
        assistant = [assistant_mask(tokenizer, r, len(row), int(sum(mask)), side, trunc_side)
                     for r, row, mask in zip(rendered, ids, masks)]
        if return_tensors == "pt":
            assistant = torch.tensor(assistant, dtype=torch.long)
        out["assistant_masks"] = assistant if (batched or return_tensors) else assistant[0]
    return out


def assistant_mask(tokenizer, rendered, padded_length, kept, padding_side, truncation_side):
    """1 on the tokens holding a {% generation %} block's characters, as transformers computes it:
    from the token of the block's first character to the token of its last; a block whose first
    character was truncated away ends the marking; one whose last was, runs to the end."""
    offsets = [(a, b) for _, a, b in tokenize_with_offsets(tokenizer, rendered.text)]
    offsets = offsets[len(offsets) - kept:] if truncation_side == "left" else offsets[:kept]
    shift = padded_length - kept if padding_side == "left" else 0  # left padding moves every token right
    mask = [0] * padded_length
    for start_char, end_char in rendered.generation_spans:
        start = char_to_token(offsets, start_char)
        end = char_to_token(offsets, end_char - 1)
        if start is None:
            break
        # transformers writes `end + 1 if end else len(ids)`: an end at token 0 also runs to the end.
        stop = end + 1 + shift if end else padded_length
        for t in range(start + shift, stop):
            mask[t] = 1
    return mask
