"""LLaVA's training data: JSON conversations -> input_ids, labels, images; a collator; a label view.

A record in LLaVA's format (llava_instruct_150k.json, blip_laion_cc_sbu_558k.json):

    {"id": "000000033471", "image": "coco/train2017/000000033471.jpg",
     "conversations": [{"from": "human", "value": "<image>\\nWhat are the colors of the bus?"},
                       {"from": "gpt", "value": "The bus is white and red."}, ...]}

The model learns only the assistant's replies. A conversation template (processing/conversation.py)
renders the turns to text AND says which characters are replies; here those character spans become
token labels. The original repo computed the mask by counting tokens per round and, when its count
disagreed with the real length, masked the whole sample with a printed "tokenization mismatch
(ignored)". Here every boundary between a masked and a trained part is checked: the ids of the text
up to the boundary must be a prefix of the ids of the whole text (so the boundary falls between two
tokens). If a token straddles it, the sample raises LabelMaskError naming its id.
"""
import json
from pathlib import Path

import torch

from ..models.llava_splice import IGNORE_INDEX, IMAGE_TOKEN_INDEX, expand_image_tokens, tokenizer_image_token
from ..processing.conversation import DEFAULT_IMAGE_TOKEN, get_template, normalise_turns, render


class LabelMaskError(ValueError):
    """A sample whose label mask cannot be computed consistently."""


def tokenize_conversation(rendered, tokenizer, sample_id="?", image_token_index=IMAGE_TOKEN_INDEX):
    """Rendered(text, trained char spans) -> (input_ids, labels) lists, labels IGNORE_INDEX outside replies."""
    text = rendered.text
    ids = tokenizer_image_token(text, tokenizer, image_token_index)

    def token_index(c):
        """How many tokens come before character c; refuses a c that falls inside a token."""
        if c == len(text):
            return len(ids)
        prefix = tokenizer_image_token(text[:c], tokenizer, image_token_index)
        if ids[:len(prefix)] != prefix:
            raise LabelMaskError(
                f"sample {sample_id!r}: cannot mask the labels: the text up to character {c} "
                f"(...{text[max(0, c - 20):c]!r} | {text[c:c + 20]!r}...) tokenizes to ids that are not a prefix "
                f"of the whole conversation's ids, so a token spans the boundary between a masked part and a reply")
        return len(prefix)

    labels = [IGNORE_INDEX] * len(ids)
    for start, end in rendered.spans:
        a, b = token_index(start), token_index(end)
        if a >= b:
            raise LabelMaskError(f"sample {sample_id!r}: the reply {text[start:end]!r} gives no tokens to train on")
        if image_token_index in ids[a:b]:
            raise LabelMaskError(f"sample {sample_id!r}: an assistant reply holds {DEFAULT_IMAGE_TOKEN}; "
                                 f"images belong in human turns")
        labels[a:b] = ids[a:b]
    return ids, labels


def load_records(source):
    """A path to LLaVA's .json / .jsonl, or a list of records already in memory."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        text = path.read_text()
        return [json.loads(line) for line in text.splitlines() if line.strip()] if path.suffix == ".jsonl" \
            else json.loads(text)
    return list(source)


def record_problem(record, image_folder=None):
    """Why `record` cannot be trained on, or None. Cheap checks (no image is decoded): its structure,
    that the turns alternate human / gpt starting with human, that its image files exist, that the
    <image> markers match its images, and that no reply is empty. A real dataset holds such records
    (LLaVA-Instruct has a few hundred); training on them silently would teach garbage."""
    if not isinstance(record, dict) or not isinstance(record.get("conversations"), list):
        return "no 'conversations' list"
    turns = record["conversations"]
    if not turns:
        return "no turns"
    if any(not isinstance(t, dict) or not isinstance(t.get("value"), str) or "from" not in t for t in turns):
        return "a turn is not {'from': ..., 'value': str}"
    try:
        normalise_turns(turns)
    except ValueError as e:
        return str(e)
    images = record.get("image")
    images = [] if images is None else images if isinstance(images, (list, tuple)) else [images]
    for image in images:
        if isinstance(image, (str, Path)):
            path = Path(image_folder) / image if image_folder is not None else Path(image)
            if not path.is_file():
                return f"image file {str(path)!r} not found"
    markers = sum(t["value"].count(DEFAULT_IMAGE_TOKEN) for t in turns)
    if markers != len(images):
        return f"{markers} {DEFAULT_IMAGE_TOKEN} marker(s) in its turns for {len(images)} image(s)"
    if len(turns) % 2:
        return "it ends with a human turn that has no reply"
    for i, t in enumerate(turns[1::2]):
        if not t["value"].strip():
            return f"reply {i} is empty"
    return None


def check_records(records, image_folder=None, on_bad="fail"):
    """(good records, [(id, problem), ...]) for on_bad="skip"; on_bad="fail" raises a ValueError listing
    the bad records' ids and problems (the first 20) when there is any."""
    if on_bad not in ("skip", "fail"):
        raise ValueError(f"on_bad must be 'skip' or 'fail', got {on_bad!r}")
    good, bad = [], []
    for i, record in enumerate(records):
        problem = record_problem(record, image_folder)
        if problem is None:
            good.append(record)
        else:
            bad.append((record.get("id", i) if isinstance(record, dict) else i, problem))
    if bad and on_bad == "fail":
        listed = "\n".join(f"  {rid!r}: {problem}" for rid, problem in bad[:20])
        more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise ValueError(f"{len(bad)} of {len(records)} record(s) cannot be trained on (skip them with "
                         f"--on-bad-record skip):\n{listed}{more}")
    return good, bad


class LlavaDataset(torch.utils.data.Dataset):
    """Records -> {"id", "input_ids" (L,), "labels" (L,), "pixel_values" (k, 3, H, W) or None}.

    Conventions: by default the original one (one IMAGE_TOKEN_INDEX = -200 per image; splice with
    models/llava_splice.py). Give image_token_id and num_image_tokens for HF's (each image already
    expanded to num_image_tokens copies of the <image> id; feed the model directly).
    A record's "image" is a file name (under image_folder), a PIL image, or a list of them; the
    number of "<image>" markers in its turns must equal the number of images.
    """

    def __init__(self, records, tokenizer, image_processor=None, image_folder=None, template="vicuna_v1",
                 image_token_id=None, num_image_tokens=None):
        if (image_token_id is None) != (num_image_tokens is None):
            raise ValueError("HF's convention needs both image_token_id and num_image_tokens (or neither, "
                             "for the original -200 convention)")
        self.records = load_records(records)
        self.tokenizer, self.image_processor = tokenizer, image_processor
        self.image_folder = Path(image_folder) if image_folder is not None else None
        self.template = get_template(template)
        self.image_token_id, self.num_image_tokens = image_token_id, num_image_tokens

    def __len__(self):
        return len(self.records)

    def images_of(self, record):
        images = record.get("image")
        if images is None:
            return []
        images = images if isinstance(images, (list, tuple)) else [images]
        if self.image_processor is None:
            raise ValueError(f"sample {record.get('id')!r} has images but the dataset has no image_processor")
        out = []
        for image in images:
            if isinstance(image, (str, Path)) and self.image_folder is not None:
                image = self.image_folder / image
            out.append(self.image_processor(image)["pixel_values"])  # (1, 3, H, W)
        return out

    def __getitem__(self, i):
        record = self.records[i]
        sample_id = record.get("id", i)
        images = self.images_of(record)
        turns = record["conversations"]
        markers = sum(t["value"].count(DEFAULT_IMAGE_TOKEN) for t in turns)
        if markers != len(images):
            raise ValueError(f"sample {sample_id!r}: its turns hold {markers} {DEFAULT_IMAGE_TOKEN} marker(s) but "
                             f"it has {len(images)} image(s)")
        try:
            rendered = render(self.template, turns)
        except ValueError as e:
            raise ValueError(f"sample {sample_id!r}: {e}") from None
        ids, labels = tokenize_conversation(rendered, self.tokenizer, sample_id)
        ids, labels = torch.tensor(ids), torch.tensor(labels)
        if self.image_token_id is not None:
            ids, labels = expand_image_tokens(ids, self.num_image_tokens, self.image_token_id, labels)
        pixel_values = torch.cat([torch.as_tensor(p) for p in images]) if images else None
        return {"id": sample_id, "input_ids": ids, "labels": labels, "pixel_values": pixel_values}


class LlavaCollator:
    """Items -> a batch: input_ids padded with pad_token_id, labels with IGNORE_INDEX, attention_mask,
    pixel_values of every image in the batch stacked in order (I, 3, H, W), or None.

    max_length truncates each sample first, like the original collator; a cut through an expanded
    image span (HF's convention, image_token_id given) is refused, since its features could not fit.
    Padding on the right for training (the original's default); "left" for generation.
    """

    def __init__(self, pad_token_id, max_length=None, padding_side="right", image_token_id=None):
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        self.pad_token_id, self.max_length, self.padding_side = pad_token_id, max_length, padding_side
        self.image_token_id = image_token_id

    def truncate(self, item):
        ids, labels = item["input_ids"], item["labels"]
        if self.max_length is None or len(ids) <= self.max_length:
            return ids, labels
        if self.image_token_id is not None:
            cut_inside = ids[self.max_length - 1] == self.image_token_id and ids[self.max_length] == self.image_token_id
            if bool(cut_inside):
                raise ValueError(f"sample {item['id']!r}: max_length={self.max_length} cuts through an image's "
                                 f"{DEFAULT_IMAGE_TOKEN} tokens; raise max_length")
        return ids[:self.max_length], labels[:self.max_length]

    def __call__(self, items):
        rows = [self.truncate(item) for item in items]
        longest = max(len(ids) for ids, _ in rows)
        batch = len(rows)
        input_ids = torch.full((batch, longest), self.pad_token_id, dtype=torch.long)
        labels = torch.full((batch, longest), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros(batch, longest, dtype=torch.long)
        for r, (ids, lab) in enumerate(rows):
            # The mask comes from the lengths, not from ids != pad: the pad id may be a real token.
            cols = slice(longest - len(ids), longest) if self.padding_side == "left" else slice(0, len(ids))
            input_ids[r, cols], labels[r, cols], attention_mask[r, cols] = ids, lab, 1
        images = [item["pixel_values"] for item in items if item["pixel_values"] is not None]
        return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask,
                "pixel_values": torch.cat(images) if images else None, "ids": [item["id"] for item in items]}


def _token_text(tokenizer, token_id):
    if hasattr(tokenizer, "convert_ids_to_tokens"):  # minivlm's and HF's take a list
        return str(tokenizer.convert_ids_to_tokens([int(token_id)])[0])
    return tokenizer.decode([int(token_id)])


def label_table(input_ids, labels, tokenizer, image_token_ids=(IMAGE_TOKEN_INDEX,), attention_mask=None):
    """A text table of one sample: position, id, token, and whether it carries loss.

    A run of image tokens is one line ("<image> x 576"); padding (attention_mask 0) is left out.
    The mark says what the model learns there: "loss" = predicting this token from the ones before.
    """
    ids, labels = [int(x) for x in input_ids], [int(x) for x in labels]
    real = [True] * len(ids) if attention_mask is None else [bool(m) for m in attention_mask]
    lines = [f"{'pos':>5}  {'id':>6}  {'token':<24}  loss"]
    i = 0
    while i < len(ids):
        if not real[i]:
            i += 1
            continue
        if ids[i] in image_token_ids:
            j = i
            while j < len(ids) and ids[j] == ids[i] and real[j]:
                j += 1
            trained = any(lab != IGNORE_INDEX for lab in labels[i:j])
            where = f"{i}-{j - 1}" if j - i > 1 else f"{i}"
            lines.append(f"{where:>5}  {ids[i]:>6}  {DEFAULT_IMAGE_TOKEN + f' x {j - i}':<24}  {'yes' if trained else '-'}")
            i = j
            continue
        token = repr(_token_text(tokenizer, ids[i]))[1:-1]
        lines.append(f"{i:>5}  {ids[i]:>6}  {token:<24}  {'yes' if labels[i] != IGNORE_INDEX else '-'}")
        i += 1
    return "\n".join(lines)


def shapes_records(world, count, split="train", start=0):
    """LLaVA-format records for the synthetic shapes world (images kept in memory as PIL):
    one 'describe' turn with the caption, then the scene's question/answer pairs."""
    records = []
    for scene in world.scenes(count, split, start):
        turns = [{"from": "human", "value": f"{DEFAULT_IMAGE_TOKEN}\ndescribe the image."},
                 {"from": "gpt", "value": scene.caption}]
        for question, answer in scene.questions:
            turns += [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
        records.append({"id": f"shapes-{split}-{scene.index}", "image": scene.image, "conversations": turns})
    return records
