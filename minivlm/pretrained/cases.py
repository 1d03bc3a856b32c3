"""Parity cases for the shipped models: each folder loaded by weights_convert.load_pretrained (strict)
and by transformers' own class, fed real shapes-world inputs (scenes, captions, questions as the
models saw them in training), every field compared within the fp32 budget and greedy ids equal.

They run through the same harness as every family's tiny case (minivlm/parity/harness.py):

    from minivlm.parity import check_case
    check_case(CASES["shapes-llava"]())    # rows (case, field, max |diff| or equal/differ, ok)
"""
import torch

from ..data.shapes import ShapesWorld
from ..parity.harness import ParityCase
from . import path

SCENES = 4        # a batch of held-out-combination scenes, from index 10**9 + 7 (never trained on)
START = 10**9 + 7


def _scenes(max_shapes=1, image_size=32):
    return ShapesWorld(image_size=image_size, max_shapes=max_shapes).scenes(SCENES, "test", start=START)


def _reference(name, arch):
    def build(dtype=torch.float32):   # the checkpoint harness (parity/checkpoint.py) loads it in the compared dtype
        import transformers
        return getattr(transformers, arch).from_pretrained(path(name), dtype=dtype).eval()
    return build


def _pixels(name, scenes):
    import weights_convert
    return weights_convert.load_image_processor(path(name))([s.image for s in scenes])["pixel_values"]


def clip_case():
    """Both towers and the similarity logits, on captions of different lengths (padded)."""
    from ..data.shapes_tokenizer import ShapesTokenizer

    def make_inputs(reference, generator):
        scenes = _scenes()
        texts = [s.caption for s in scenes[:-1]] + ["a red triangle"]
        return dict(ShapesTokenizer()(texts), pixel_values=_pixels("shapes-clip", scenes))

    return ParityCase("shipped", "shapes-clip", _reference("shapes-clip", "CLIPModel"), make_inputs,
                      ("logits_per_image", "logits_per_text", "text_embeds", "image_embeds"), folder=str(path("shapes-clip")))


def blip_case():
    """Teacher-forced caption logits ([DEC] + the caption) and the greedy caption from [DEC] alone."""
    from ..data.shapes_tokenizer import BlipShapesTokenizer
    from ..evaluation.retrieval import with_first_token
    tokenizer = BlipShapesTokenizer()

    def make_inputs(reference, generator):
        scenes = _scenes()
        text = tokenizer([s.caption for s in scenes])
        return {"pixel_values": _pixels("shapes-blip", scenes), "attention_mask": text["attention_mask"],
                "input_ids": with_first_token(text["input_ids"], tokenizer.dec_token_id)}

    return ParityCase("shipped", "shapes-blip", _reference("shapes-blip", "BlipForConditionalGeneration"), make_inputs,
                      ("logits",), generate=dict(max_new_tokens=10), folder=str(path("shapes-blip")),
                      valid_positions=lambda inputs: inputs["attention_mask"].bool(),
                      generate_inputs=lambda inputs: {"pixel_values": inputs["pixel_values"]})


def blip_retrieval_case(use_itm_head):
    """ITM: P(match) logits of each (scene, caption) pair, the text read with [ENC] and cross-attention
    into its image; ITC: the (images, texts) cosine matrix of the unimodal encoders. One caption is
    shorter (padded) and one belongs to no scene of the batch (a mismatch for ITM)."""
    from ..data.shapes_tokenizer import BlipShapesTokenizer
    from ..evaluation.retrieval import with_first_token
    tokenizer = BlipShapesTokenizer()

    def make_inputs(reference, generator):
        scenes = _scenes()
        text = tokenizer([s.caption for s in scenes[:-1]] + ["a red triangle"])
        ids = with_first_token(text["input_ids"], tokenizer.enc_token_id) if use_itm_head else text["input_ids"]
        return {"pixel_values": _pixels("shapes-blip-retrieval", scenes), "input_ids": ids,
                "attention_mask": text["attention_mask"], "use_itm_head": use_itm_head}

    head = "ITM" if use_itm_head else "ITC"
    return ParityCase("shipped", f"shapes-blip-retrieval {head}",
                      _reference("shapes-blip-retrieval", "BlipForImageTextRetrieval"), make_inputs,
                      ("itm_score", "question_embeds", "last_hidden_state"), folder=str(path("shapes-blip-retrieval")))


def llava_case():
    """Questions in the training chat format, left-padded to one batch, one image each: the logits at
    real positions, then the greedy replies."""
    import weights_convert
    from ..data.llava_dataset import LlavaCollator
    from ..models.llava_splice import expand_image_tokens, tokenizer_image_token
    from ..evaluation.answers import chat_prompt
    folder = path("shapes-llava")

    def make_inputs(reference, generator):
        cfg = reference.config
        n = cfg.image_seq_length
        tokenizer = weights_convert.load_tokenizer(folder)
        scenes = _scenes(max_shapes=2, image_size=cfg.vision_config.image_size)
        items = []
        for i, s in enumerate(scenes):
            ids = expand_image_tokens(tokenizer_image_token(chat_prompt(s.questions[i % 2][0]), tokenizer), n,
                                      cfg.image_token_index)
            items.append(dict(id=i, input_ids=ids, labels=ids, pixel_values=None))
        batch = LlavaCollator(cfg.text_config.pad_token_id, padding_side="left")(items)
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
                "pixel_values": _pixels("shapes-llava", scenes)}

    return ParityCase("shipped", "shapes-llava", _reference("shapes-llava", "LlavaForConditionalGeneration"),
                      make_inputs, ("logits",), generate=dict(max_new_tokens=10), folder=str(folder),
                      valid_positions=lambda inputs: inputs["attention_mask"].bool())


# case name -> case; a model with two heads (BLIP retrieval: ITM and ITC) has a case per head
CASES = {"shapes-clip": clip_case, "shapes-blip": blip_case,
         "shapes-blip-retrieval ITM": lambda: blip_retrieval_case(True),
         "shapes-blip-retrieval ITC": lambda: blip_retrieval_case(False), "shapes-llava": llava_case}
