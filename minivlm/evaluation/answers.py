"""Answers of the shapes-world LLaVA: greedy replies to (image, question) pairs asked in CHAT, the
conversation format it was trained in, and the type of each question (count, colour, shape,
position) its accuracy is reported by.

The LLaVA recipe (train/llava.py), BLIP-2's comparison recipe, the shipped shapes-llava's held-out
figures (pretrained/heldout.py) and the retrieval demo (retrieval/rag.py) all ask with these.
"""
import torch

from ..data.llava_dataset import LlavaCollator
from ..models.llava_splice import expand_image_tokens, tokenizer_image_token
from ..processing.conversation import DEFAULT_IMAGE_TOKEN, Template, render

CHAT = Template("shapes_chat", "two", "", ("USER", "ASSISTANT"), " ", "</s>")
QUESTION_TYPES = (("how many", "count"), ("what color", "color"), ("what shape", "shape"), ("where", "position"))


def question_type(question):
    for start, kind in QUESTION_TYPES:
        if question.startswith(start):
            return kind
    raise ValueError(f"unknown question {question!r}; expected one starting with "
                     f"{[s for s, _ in QUESTION_TYPES]}")


# --- the model -----------------------------------------------------------------------------------


@torch.no_grad()
def answer(model, tokenizer, processor, images, prompts, max_new_tokens=12, stop=(2,), batch_size=64):
    """Greedy replies to (image, prompt text holding <image>) pairs; prompts left-padded in batches."""
    cfg = model.config
    model.eval()
    collator = LlavaCollator(cfg.text_config.pad_token_id, padding_side="left")
    replies = []
    for s in range(0, len(prompts), batch_size):
        items = []
        for image, text in zip(images[s:s + batch_size], prompts[s:s + batch_size]):
            ids = expand_image_tokens(tokenizer_image_token(text, tokenizer), cfg.features_per_image,
                                      cfg.image_token_index)
            items.append(dict(id=len(items), input_ids=ids, labels=ids, pixel_values=processor(image)["pixel_values"]))
        batch = collator(items)
        out = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                             pixel_values=batch["pixel_values"], max_new_tokens=max_new_tokens,
                             eos_token_id=list(stop))
        for row in out[:, batch["input_ids"].shape[1]:].tolist():
            cut = next((i for i, t in enumerate(row) if t in stop), len(row))
            replies.append(tokenizer.decode(row[:cut]).strip())
    return replies


def chat_prompt(question):
    return render(CHAT, [("human", f"{DEFAULT_IMAGE_TOKEN}\n{question}")], add_generation_prompt=True).text
