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
"""
from .chat_template import pick_template, render_chat_template

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
    if return_assistant_tokens_mask:
        raise ValueError("return_assistant_tokens_mask is not supported on a processor (its image tokens move the "
                         "spans); take the mask from the tokenizer's apply_chat_template on the text")
    template = pick_template(processor.chat_template, chat_template, (template_kwargs or {}).get("tools"),
                             owner="processor")
    batched = isinstance(conversation, (list, tuple)) and bool(conversation) and \
        isinstance(conversation[0], (list, tuple))
    conversations = list(conversation) if batched else [conversation]
    tokenizer = processor.tokenizer
    specials = {name: getattr(tokenizer, name) for name in SPECIAL_NAMES if getattr(tokenizer, name, None)}
    prompts = [render_chat_template(template, c, add_generation_prompt=add_generation_prompt,
                                    continue_final_message=continue_final_message,
                                    **{**specials, **(template_kwargs or {})}) for c in conversations]
    if not tokenize:
        return prompts if batched else prompts[0]

    kwargs = dict(processor_kwargs or {})
    if tokenizer.bos_token is not None and prompts[0].startswith(tokenizer.bos_token):
        kwargs["add_special_tokens"] = False  # the template wrote <s> already (HF's rule)
    images = [media_of(c, "image") for c in conversations]
    videos = [v for c in conversations for v in media_of(c, "video")]
    out = processor(text=prompts, images=images if any(images) else None, videos=videos or None,
                    return_tensors=return_tensors, **kwargs)
    return out if return_dict else out["input_ids"]
