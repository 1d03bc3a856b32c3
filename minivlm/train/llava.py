"""The LLaVA recipe: two-stage training of a tiny LLaVA on the shapes world (Liu et al. 2023, section 4.2).

    vision tower   the tiny CLIP ViT trained by dual_encoder.py (loaded from its run folder, or trained
                   first); frozen in both stages, as in LLaVA
    projector      linear -> gelu -> linear (LLaVA-1.5), new
    language model a tiny Llama, new; optionally pre-trained as a text LM on the world's sentences

    stage 1  feature alignment: projector only, on captions in the 'plain' template
             "<image>a red circle on the left\\n"
    stage 2  instruction tuning: projector + LM, on one exchange per record — "describe the image."
             or one of the scene's questions — in CHAT, vicuna_v1's format ending replies with </s>

Data goes the way a real LLaVA run's does: LLaVA-JSON records (data/llava_dataset.py's
`shapes_records`) -> LlavaDataset (template, label mask checked at every reply boundary, HF's
expanded <image> convention) -> LlavaCollator -> the model's own loss.

Tokenizer: the character-level Llama-2-style tokenizer of processing/tiny_tokenizer.py (tokenizer.json written in code,
read by weights_convert.load_tokenizer). The word-level ShapesTokenizer cannot say "USER:", "." or
"</s>", which every conversation template needs; the character one can say anything, so the dataset,
the templates and the label checks run unchanged. The price: ~60 tokens per exchange instead of ~12.

The saved run folder is a LLaVA checkpoint like any other: weights_convert.load_pretrained loads it,
and `python -m minivlm trace --checkpoint runs/llava --image scene.png --prompt "what color is the
circle?"` answers with it (the trace's llava_hf prompt equals CHAT's generation prompt).

Measured (defaults, 1 thread on a shared 2-core box, ~3.9 min): answers on unseen images of seen
colour/shape combinations colour 0.83, shape 0.80, count 0.89, position 0.94, captions exact 0.41.
On held-out combinations the questions fail (colour 0.16, shape 0.05) while captions still get the
colour right (0.83): a question names one attribute ("what color is the circle?") and the tiny LM
answers from what went with it in training rather than from the image. Stage 1 alone (frozen LM)
cuts the caption loss 0.92 -> 0.30 but writes no correct caption yet; stage 2 does the learning.
"""
import json
import random
import re
import tempfile
import time
from pathlib import Path

import torch

from ..data.llava_dataset import LlavaCollator, LlavaDataset, shapes_records
from ..data.shapes import EVAL_START, ShapesWorld
from ..models.llava import LlavaConfig, LlavaForConditionalGeneration, freeze
from ..processing.conversation import DEFAULT_IMAGE_TOKEN
from ..text.llama_config import LlamaConfig
from ..processing.tiny_tokenizer import ADDED, tiny_vocabulary, write_tiny_tokenizer
from ..evaluation.answers import CHAT, answer, chat_prompt, question_type
from .dual_encoder import load_vision_tower, train_dual_encoder
from . import distributed
from .llava_loss import llava_loss
from .loop import TrainConfig, options_from_args, train, trained_tokens
from .plot import save_loss_curve

# vicuna_v1 without its 170-character system prompt: "USER: <image>\nq ASSISTANT: a</s>". Replies end
# with </s> so the model learns to stop. Its generation prompt is the llava-hf one the trace uses.
DESCRIBE = "describe the image."

TINY_LM = dict(hidden_size=64, intermediate_size=172, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2)
# Measured choices: two shapes at most, so "how many"
# has two answers and "where" is asked of single shapes; the tower's LAST layer with [CLS] kept
# ('full') — in a 2-layer tower the penultimate layer is one layer deep, and the last [CLS] is what
# CLIP trained; a 100-200 step text pre-training of the LM, without which stage 1 cannot move.
#
# Held-out combinations (measured, seed 0, 150 scenes per split; colour / shape answers, seen -> held-out):
#   default                                      83% / 80%  ->  16% /  5%   captions exact 41%
#   attribute_questions=True                     85% / 75%  ->  28% / 16%   captions exact 22%
#   text_on="captions"                           80% / 75%  ->  38% /  1%   captions exact 28%
#   both                                         82% / 74%  ->  44% / 13%   captions exact 11%
# attribute_questions adds, per scene, questions that ask one attribute without naming the other
# ("what color is it?", "what shape is on the left?"), so reading colour from the image is trained apart
# from the shape word the evaluation's "what color is the circle?" conditions on. text_on="captions"
# keeps the Q/A exchanges out of the text-only LM pre-training, which otherwise learns the prior
# P(colour | "the circle") before any image. Each lifts held-out colour, at a cost on seen pairs
# (count 89% -> 81% / 79% / 77%, captions) in the same 1000 steps; the default stays as it was.
RECIPE = dict(max_shapes=2, feature_layer=-1, select="full", scenes=2000, batch_size=32,
              text_steps=200, text_lr=3e-3, stage1_steps=150, stage1_lr=3e-3, stage2_steps=1000, stage2_lr=2e-3,
              clip_steps=None, attribute_questions=False, text_on="all")


def clip_tower(clip_run, clip_steps=None, progress=True):
    """The trained CLIP ViT and its preprocessor config, from `clip_run`; trains and saves it there
    first (dual_encoder.train_dual_encoder) when the folder holds no model."""
    clip_run = Path(clip_run)
    if not (clip_run / "model.safetensors").is_file():
        train_dual_encoder("clip", steps=clip_steps, out=clip_run, progress=progress)
        distributed.barrier()  # under torchrun rank 0 saves it; the others wait to read it
    processor = json.loads((clip_run / "preprocessor_config.json").read_text())
    hf_vision = json.loads((clip_run / "config.json").read_text())["vision_config"]
    return load_vision_tower(clip_run), processor, hf_vision


def build_llava(tower, vocab_size, lm=TINY_LM, seed=0, feature_layer=-2, select="default"):
    """A LLaVA around a trained tower: new projector, new tiny Llama speaking the character vocabulary.
    The <image> and <pad> ids are the two added tokens after the vocabulary (processing.tiny_tokenizer.ADDED)."""
    torch.manual_seed(seed)
    base = len(tiny_vocabulary())
    image_id, pad_id = base + ADDED.index("<image>"), base + ADDED.index("<pad>")
    text = LlamaConfig(vocab_size=vocab_size, max_position_embeddings=512, rms_norm_eps=1e-5,
                       bos_token_id=1, eos_token_id=2, pad_token_id=pad_id, **lm)
    cfg = LlavaConfig(vision_config=tower.config, text_config=text, image_token_index=image_id,
                      image_seq_length=tower.config.num_patches + int(select == "full"),
                      vision_feature_layer=feature_layer, vision_feature_select_strategy=select)
    model = LlavaForConditionalGeneration(cfg)
    model.vision_tower.load_state_dict(tower.state_dict())  # strict: the same VisionTransformer
    return model


# --- data ----------------------------------------------------------------------------------------

def caption_records(world, count, split="train", start=0):
    """Stage 1: the 'describe' exchange of each scene alone (the plain template keeps image + caption)."""
    return [dict(r, conversations=r["conversations"][:2]) for r in shapes_records(world, count, split, start)]


def exchange_records(world, count, split="train", start=0, attribute_questions=False):
    """Stage 2: every exchange of every scene as its own one-turn record, the image in each.

    One exchange per record, not the whole conversation: a later question could otherwise be answered
    by copying from the caption the model just wrote, and evaluation asks each question alone.
    attribute_questions: append, per scene, the questions of `attribute_questions` (after all others)."""
    records = []
    raw = shapes_records(world, count, split, start)
    for r in raw:
        turns = r["conversations"]
        for k in range(0, len(turns), 2):
            question = turns[k]["value"].replace(f"{DEFAULT_IMAGE_TOKEN}\n", "")
            records.append(dict(r, id=f"{r['id']}-{k // 2}", conversations=[
                {"from": "human", "value": f"{DEFAULT_IMAGE_TOKEN}\n{question}"}, turns[k + 1]]))
    if attribute_questions:
        for r, scene in zip(raw, world.scenes(count, split, start)):
            records += [dict(r, id=f"{r['id']}-g{k}", conversations=[
                {"from": "human", "value": f"{DEFAULT_IMAGE_TOKEN}\n{q}"}, {"from": "gpt", "value": a}])
                for k, (q, a) in enumerate(single_attribute_questions(scene))]
    return records


def single_attribute_questions(scene):
    """Questions that ask a colour without naming the shape, or a shape without naming the colour."""
    shapes = sorted(scene.shapes, key=lambda s: s.cx)
    if len(shapes) == 1:
        return [("what color is it?", shapes[0].color), ("what shape is it?", shapes[0].kind)]
    left, right = shapes[0], shapes[-1]
    return [("what color is the left shape?", left.color), ("what color is the right shape?", right.color),
            ("what shape is on the left?", left.kind), ("what shape is on the right?", right.kind)]


def strip_images(items, image_token_id):
    """The same token sequences with the image taken out: what the LM alone pre-trains on."""
    out = []
    for item in items:
        keep = item["input_ids"] != image_token_id
        out.append(dict(item, input_ids=item["input_ids"][keep], labels=item["labels"][keep], pixel_values=None))
    return out


def materialise(records, tokenizer, processor, template, model):
    """Tokenize and preprocess every record once (LlavaDataset), HF's expanded <image> convention."""
    cfg = model.config
    dataset = LlavaDataset(records, tokenizer, processor, template=template, image_token_id=cfg.image_token_index,
                           num_image_tokens=cfg.features_per_image)
    return [dataset[i] for i in range(len(dataset))]


def random_batches(items, collator, batch_size, seed=0):
    """Endless batches of items drawn at random (with replacement across batches)."""
    rng = random.Random(seed)
    while True:
        yield collator(rng.sample(items, min(batch_size, len(items))))


def text_loss(lm, batch):
    """LM pre-training: every real token is a target (labels were masked to replies by the dataset)."""
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    return lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss


def text_tokens(batch):
    """What text_loss trains on: every real token after the first (its loss_weight)."""
    return float(batch["attention_mask"][:, 1:].sum())


_PHRASE = re.compile(r"a (\w+) (\w+)")


def caption_scores(caption, scene):
    """Attribute hits of one caption: each shape's colour and kind in left-to-right order (as the
    captions list them), the number of shapes, and (one shape) its position word."""
    truth = sorted(scene.shapes, key=lambda s: s.cx)
    said = _PHRASE.findall(caption)
    hits = dict(exact=float(caption == scene.caption), count=float(len(said) == len(truth)),
                color=sum(k < len(said) and said[k][0] == s.color for k, s in enumerate(truth)) / len(truth),
                shape=sum(k < len(said) and said[k][1] == s.kind for k, s in enumerate(truth)) / len(truth))
    if len(truth) == 1:
        hits["position"] = float(truth[0].where in caption.split())
    return hits


def evaluate(model, tokenizer, processor, world, split, count, plain=False):
    """Accuracy on `count` fresh scenes of `split` (indices from EVAL_START: never trained on).
    Every question alone, exact answer; "describe the image." scored by caption_scores.
    plain=True (after stage 1): captions only, prompted with the plain template's bare <image>."""
    scenes = world.scenes(count, split, start=EVAL_START)
    if plain:
        captions = answer(model, tokenizer, processor, [s.image for s in scenes], [DEFAULT_IMAGE_TOKEN] * count,
                          max_new_tokens=64, stop=(2, 13))  # the plain template ends a caption with "\n" (<0x0A>)
    else:
        captions = answer(model, tokenizer, processor, [s.image for s in scenes], [chat_prompt(DESCRIBE)] * count,
                          max_new_tokens=64)
    scores = [caption_scores(c, s) for c, s in zip(captions, scenes)]
    result = {f"caption_{k}": mean([sc[k] for sc in scores if k in sc])
              for k in ("exact", "color", "shape", "count", "position")}
    result["caption_examples"] = [f"{s.caption} -> {c}" for s, c in zip(scenes[:3], captions[:3])]
    if plain:
        return result
    asked = [(s, q, a) for s in scenes for q, a in s.questions]
    replies = answer(model, tokenizer, processor, [s.image for s, _, _ in asked], [chat_prompt(q) for _, q, _ in asked])
    by_type = {}
    for (_, q, a), reply in zip(asked, replies):
        by_type.setdefault(question_type(q), []).append(reply == a)
    for kind, hits in by_type.items():
        result[kind] = mean(hits)
        result[f"{kind}_n"] = len(hits)
    return result


def mean(values):
    values = list(values)
    return round(sum(values) / len(values), 3) if values else None


# --- the recipe ------------------------------------------------------------------------------------

def run_setup(out, clip_run, clip_steps=None, progress=True):
    """What a recipe on the trained CLIP tower starts from (LLaVA, BLIP-2): the tower (trained first when
    `clip_run` holds none), the character tokenizer and the tower's image processor, both written into
    the run folder (a temporary one when out is None) and read back through weights_convert.
    Returns tower, its HF vision config, the vocabulary size, tokenizer, processor."""
    tower, processor_cfg, hf_vision = clip_tower(clip_run, clip_steps, progress)
    import weights_convert
    # Under torchrun only rank 0 writes into `out`; the others keep their tokenizer in a folder of their own.
    folder = Path(out) if out is not None and distributed.is_main() else Path(tempfile.mkdtemp(prefix="minivlm-run-"))
    folder.mkdir(parents=True, exist_ok=True)
    vocab_size = write_tiny_tokenizer(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(processor_cfg, indent=2) + "\n")
    return tower, hf_vision, vocab_size, weights_convert.load_tokenizer(folder), weights_convert.load_image_processor(folder)


def train_llava(out=None, clip_run="runs/clip", seed=0, device="cpu", progress=True, eval_count=150,
                lm=TINY_LM, train_options=None, **recipe):
    """Train a tiny LLaVA in two stages; save it to `out` (if given). recipe overrides RECIPE's
    entries (stage1_steps, stage2_lr, scenes, ...); train_options go to every stage's TrainConfig
    (checkpoints, grad_accum, precision). Returns (model, histories, result)."""
    unknown = set(recipe) - set(RECIPE)
    if unknown:
        raise ValueError(f"unknown recipe option(s) {sorted(unknown)}; known: {sorted(RECIPE)}")
    r = dict(RECIPE, **recipe)
    options = dict(train_options or {}, loss_weight=trained_tokens)  # accumulated micro-batches count by tokens
    torch.manual_seed(seed)
    tower, hf_vision, vocab_size, tokenizer, processor = run_setup(out, clip_run, r["clip_steps"], progress)
    model = build_llava(tower, vocab_size, lm, seed, r["feature_layer"], r["select"])
    world = ShapesWorld(image_size=tower.config.image_size, max_shapes=r["max_shapes"], seed=seed)
    collator = LlavaCollator(model.config.text_config.pad_token_id, image_token_id=model.config.image_token_index)

    start = time.time()
    chats = materialise(exchange_records(world, r["scenes"], attribute_questions=r["attribute_questions"]),
                        tokenizer, processor, CHAT, model)
    captions = materialise(caption_records(world, r["scenes"]), tokenizer, processor, "plain", model)
    prep_seconds = time.time() - start

    histories, result = {}, dict(recipe=r, lm=lm, train_records=dict(stage1=len(captions), stage2=len(chats)),
                                 prep_seconds=round(prep_seconds, 1))
    if r["text_steps"]:  # stage 0: the LM alone learns the world's language (both formats, no image)
        if r["text_on"] not in ("all", "captions"):
            raise ValueError(f"text_on must be 'all' or 'captions', got {r['text_on']!r}")
        texts = strip_images(captions + chats if r["text_on"] == "all" else captions, model.config.image_token_index)
        for p in model.language_model.parameters():
            p.requires_grad_(True)
        histories["text"] = train(model.language_model, random_batches(texts, collator, r["batch_size"], seed),
                                  text_loss, TrainConfig(steps=r["text_steps"], lr=r["text_lr"], device=device,
                                                         progress=progress, desc="text LM",
                                                         **dict(options, loss_weight=text_tokens)))
    for stage, items in ((1, captions), (2, chats)):
        trainable = freeze(model, stage)
        config = TrainConfig(steps=r[f"stage{stage}_steps"], lr=r[f"stage{stage}_lr"], device=device,
                             progress=progress, desc=f"stage {stage}", **options)
        histories[f"stage{stage}"] = train(model, random_batches(items, collator, r["batch_size"], seed + stage),
                                           llava_loss, config)
        h = histories[f"stage{stage}"]
        result[f"stage{stage}"] = dict(steps=config.steps, seconds=round(h.seconds, 1),
                                       trainable_parameters=sum(p.numel() for n, p in model.named_parameters()
                                                                if n in set(trainable)),
                                       loss_first=round(h.mean_loss(first=10), 4), loss_last=round(h.mean_loss(last=10), 4))
        if stage == 1:
            result["stage1"]["eval"] = evaluate(model, tokenizer, processor, world, "train", eval_count // 3, plain=True)
    if "text" in histories:
        result["text"] = dict(steps=r["text_steps"], seconds=round(histories["text"].seconds, 1),
                              loss_first=round(histories["text"].mean_loss(first=10), 4),
                              loss_last=round(histories["text"].mean_loss(last=10), 4))
    start = time.time()
    result["seen_combos"] = evaluate(model, tokenizer, processor, world, "train", eval_count)
    result["held_out_combos"] = evaluate(model, tokenizer, processor, world, "test", eval_count)
    result["eval_seconds"] = round(time.time() - start, 1)
    model.eval()
    if out is not None and distributed.is_main():
        result["out"] = str(save_run(model, hf_vision, histories, result, out))
    return model, histories, result


# --- saving --------------------------------------------------------------------------------------

def llava_hf_config(cfg, hf_vision):
    """LlavaConfig (ours) -> the dict transformers' LlavaConfig writes (what weights_convert reads)."""
    t = cfg.text_config
    text = dict(model_type="llama", vocab_size=t.vocab_size, hidden_size=t.hidden_size,
                intermediate_size=t.intermediate_size, num_hidden_layers=t.num_hidden_layers,
                num_attention_heads=t.num_attention_heads, num_key_value_heads=t.num_key_value_heads,
                max_position_embeddings=t.max_position_embeddings, rms_norm_eps=t.rms_norm_eps,
                rope_theta=t.rope_parameters["rope_theta"], hidden_act=t.hidden_act,
                bos_token_id=t.bos_token_id, eos_token_id=t.eos_token_id, pad_token_id=t.pad_token_id,
                tie_word_embeddings=t.tie_word_embeddings)
    return dict(architectures=["LlavaForConditionalGeneration"], model_type="llava",
                image_token_index=cfg.image_token_index, image_seq_length=cfg.image_seq_length,
                pad_token_id=t.pad_token_id, projector_hidden_act=cfg.projector_hidden_act,
                vision_feature_layer=cfg.vision_feature_layer,
                vision_feature_select_strategy=cfg.vision_feature_select_strategy,
                vision_config=dict(hf_vision, model_type="clip_vision_model"), text_config=text)


def save_run(model, hf_vision, histories, result, out):
    """The run folder: a LLaVA checkpoint (config, weights, tokenizer, preprocessor) + history, metrics, plot."""
    from .export import save_pretrained
    out = Path(out)
    save_pretrained(model, out, llava_hf_config(model.config, hf_vision))
    (out / "history.json").write_text(json.dumps({k: h.as_dict() for k, h in histories.items()}) + "\n")
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    stage_names = {"text": "text LM only", "stage1": "stage 1", "stage2": "stage 2"}
    save_loss_curve({stage_names.get(k, k): h for k, h in histories.items()}, out / "loss.png",
                    title="tiny LLaVA on the shapes world", ylabel="loss (cross-entropy per trained token)")
    return out


def run(args):
    """`python -m minivlm train llava`: --steps sets stage 2's steps; the CLIP tower comes from runs/clip
    (trained there first with the CLIP recipe when missing)."""
    options = options_from_args(args)
    if getattr(args, "plan", False):  # bytes per rank of this run, nothing trained (plan.py)
        from .plan import run_plan
        return run_plan(args)
    if getattr(args, "data", None):  # your own LLaVA-format data (llava_json.py)
        from .llava_json import run as run_on_json
        return run_on_json(args, options)
    recipe = {"stage2_steps": args.steps} if args.steps else {}
    if getattr(args, "batch_size", None):
        recipe["batch_size"] = args.batch_size
    _, _, result = train_llava(out=args.out, clip_run=getattr(args, "clip_run", None) or "runs/clip",
                               seed=args.seed, device=args.device, train_options=options, **recipe)
    if not distributed.is_main():
        return result
    seen, held = result["seen_combos"], result["held_out_combos"]
    line = lambda r: " ".join(f"{k} {r[k]:.0%}" for k in ("color", "shape", "count", "position", "caption_exact") if k in r)
    print(f"unseen images, seen combinations: {line(seen)}\nheld-out combinations:            {line(held)}\n"
          f"stage 1 {result['stage1']['steps']} steps {result['stage1']['seconds']:.0f}s, stage 2 "
          f"{result['stage2']['steps']} steps {result['stage2']['seconds']:.0f}s; saved to {result['out']}", flush=True)
    return result
