"""load_processor against transformers' processors, built offline from tiny tokenizers and image
processors, saved, and read by both: every output key equal (ids, masks, sizes and grids exactly;
pixel_values within the image budget of DESIGN.md), left and right padding, several images per
prompt, truncation, decoding.

The OneVision and Qwen2-VL processors need a video processor, which transformers only builds with
torchvision (not installed): their HF processors are assembled without one and fed images; the
video path is checked by hand and through the model (test_processor_video.py)."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import weights_convert
from minivlm.processing.processor import (Blip2Processor, InstructBlipProcessor, LlavaNextProcessor,
                                          LlavaOnevisionProcessor, LlavaProcessor, Processor, Qwen2VLProcessor)

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

CORPUS = ["Hello world! The quick brown fox jumps over the lazy dog.", "What is in this image? A cat on a mat.",
          "USER: ASSISTANT: describe the picture in one sentence, please.", "red circle blue square green"] * 20
PROMPTS = ["USER: <image>\nWhat is this? ASSISTANT:", "a <image> b <image> the lazy dog", "no image here at all"]


def random_image(height, width, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


IMAGES = [random_image(27, 104, 1), random_image(104, 27, 2), random_image(50, 50, 3)]


def byte_bpe(specials, bos="<s>", eos="</s>", pad="<pad>", add_bos=True, **extra):
    """A small byte-level BPE tokenizer (PreTrainedTokenizerFast) with the given special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    names = [t for t in (bos, eos, pad) if t]
    tk.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=320, show_progress=False, special_tokens=names + specials,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    if add_bos:
        tk.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, tk.token_to_id(bos))])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=bos, eos_token=eos, pad_token=pad,
                                                additional_special_tokens=specials, **extra)


def bert_tokenizer(folder):
    words = sorted({w.strip("?!.,:").lower() for line in CORPUS for w in line.split()} - {""})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "?", "!", ".", ",", ":", "<", ">", *words]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return transformers.BertTokenizer(str(folder / "vocab.txt"))


def saved_pair(hf, folder):
    """Save an HF processor, read it back with AutoProcessor and with load_processor."""
    hf.save_pretrained(folder)
    return transformers.AutoProcessor.from_pretrained(folder), weights_convert.load_processor(folder)


def hub_pair(cls, folder, tokenizer, image_processor, fields):
    """Processors whose HF class needs a torchvision video processor: the folder is written as the hub
    lays it out (processor_config.json with the family fields, preprocessor_config.json, tokenizer
    files), and HF's processor is assembled without its video processor."""
    tokenizer.save_pretrained(folder)
    image_processor.save_pretrained(folder)
    (folder / "processor_config.json").write_text(json.dumps({"processor_class": cls.__name__, **fields}))
    hf = cls.__new__(cls)
    hf.chat_template, hf.tokenizer, hf.image_processor = None, tokenizer, image_processor
    hf.__dict__.update({k: v for k, v in fields.items() if k not in ("image_token", "video_token")})
    for kind, default in (("image", "<image>"), ("video", "<video>")):
        token = fields.get(f"{kind}_token", default)
        setattr(hf, f"{kind}_token", token)
        setattr(hf, f"{kind}_token_id", tokenizer.convert_tokens_to_ids(token))
    return hf, weights_convert.load_processor(folder)


def assert_same(ours, hf, budget_std=None, **kwargs):
    a, b = ours(return_tensors="pt", **kwargs), hf(return_tensors="pt", **kwargs)
    assert sorted(a) == sorted(b), (sorted(a), sorted(b))
    for key in a:
        if key.startswith("pixel_values"):
            assert a[key].shape == b[key].shape, key
            diff = (a[key] - b[key].float()).abs()
            assert diff.max() <= 1 / 255 / budget_std + 1e-6 and diff.mean() <= 1e-3, (key, diff.max())
        else:
            assert torch.equal(a[key], torch.as_tensor(b[key]).to(a[key].dtype)), (key, a[key], b[key])
    return a


def clip_image_processor(side=30, **overrides):
    return transformers.CLIPImageProcessorPil(size={"shortest_edge": side}, crop_size={"height": side, "width": side},
                                              **overrides)


CLIP_STD = min(transformers.image_utils.OPENAI_CLIP_STD) if hasattr(transformers, "image_utils") else 0.26


@pytest.fixture(scope="module")
def llava_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("llava")
    out = {}
    for name, fields in {"cls-default": dict(patch_size=6, vision_feature_select_strategy="default",
                                             num_additional_image_tokens=1),
                         "no-cls-full-patch-7": dict(patch_size=7, vision_feature_select_strategy="full",
                                                     num_additional_image_tokens=0)}.items():
        hf = transformers.LlavaProcessor(image_processor=clip_image_processor(30 if name == "cls-default" else 28),
                                         tokenizer=byte_bpe(["<image>"]), **fields)
        out[name] = saved_pair(hf, root / name)
    return out


@pytest.mark.parametrize("name", ["cls-default", "no-cls-full-patch-7"])
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_llava_equals_hf(llava_folders, name, padding_side):
    hf, ours = llava_folders[name]
    assert isinstance(ours, LlavaProcessor)
    out = assert_same(ours, hf, CLIP_STD, text=PROMPTS, images=IMAGES, padding=True, padding_side=padding_side)
    n = (30 // 6) ** 2 if name == "cls-default" else (28 // 7) ** 2  # by hand: patches (+1 [CLS] -1 'default')
    assert (out["input_ids"] == ours.image_token_id).sum(1).tolist() == [n, 2 * n, 0]
    assert_same(ours, hf, CLIP_STD, text=PROMPTS[0], images=IMAGES[0])
    assert_same(ours, hf, CLIP_STD, text=PROMPTS, images=IMAGES, padding="max_length", max_length=90, truncation=True)
    assert_same(ours, hf, CLIP_STD, text=PROMPTS, images=IMAGES, padding=True, return_mm_token_type_ids=True)
    assert_same(ours, hf, CLIP_STD, images=IMAGES)
    assert_same(ours, hf, CLIP_STD, text=PROMPTS[2])


def test_decoding_equals_hf(llava_folders):
    hf, ours = llava_folders["cls-default"]
    ids = hf(text=PROMPTS, images=IMAGES, padding=True, return_tensors="pt")["input_ids"]
    for skip in (False, True):
        assert ours.batch_decode(ids, skip_special_tokens=skip) == hf.batch_decode(ids, skip_special_tokens=skip)
        assert ours.decode(ids[1], skip_special_tokens=skip) == hf.decode(ids[1], skip_special_tokens=skip)
    assert ours.post_process_image_text_to_text(ids) == hf.post_process_image_text_to_text(ids)
    assert ours.post_process_image_text_to_text(ids[0]) == hf.post_process_image_text_to_text(ids[0])


NEXT = {"tiles-12-patch-6": (dict(size={"shortest_edge": 12}, crop_size={"height": 12, "width": 12},
                                  image_grid_pinpoints=[[12, 24], [24, 12], [24, 24], [36, 12], [12, 36]]),
                             dict(patch_size=6, vision_feature_select_strategy="default", num_additional_image_tokens=1)),
        "tiles-35-siglip-full": (dict(size={"shortest_edge": 35}, crop_size={"height": 35, "width": 35}, resample=2,
                                      image_grid_pinpoints=[[35, 70], [105, 35], [70, 70], [35, 35], [70, 105]]),
                                 dict(patch_size=5, vision_feature_select_strategy="full", num_additional_image_tokens=0))}


@pytest.mark.parametrize("name", NEXT)
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_llava_next_equals_hf(tmp_path, name, padding_side):
    image_cfg, fields = NEXT[name]
    hf, ours = saved_pair(transformers.LlavaNextProcessor(image_processor=transformers.LlavaNextImageProcessorPil(
        **image_cfg), tokenizer=byte_bpe(["<image>"]), **fields), tmp_path)
    assert isinstance(ours, LlavaNextProcessor)
    images = IMAGES + [random_image(5, 301, 4)]
    assert_same(ours, hf, CLIP_STD, text=PROMPTS + ["<image> tall"], images=images, padding=True,
                padding_side=padding_side)


ONEVISION_IMAGE = dict(size={"height": 12, "width": 12}, image_grid_pinpoints=[[12 * r, 12 * c] for r in (1, 2, 3)
                                                                               for c in (1, 2, 3)])


@pytest.mark.parametrize("aspect", ["anyres_max_9", "anyres_max_1"])
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_onevision_equals_hf_single_and_several_images(tmp_path, aspect, padding_side):
    fields = dict(num_image_tokens=4, vision_feature_select_strategy="full", vision_aspect_ratio=aspect)
    hf, ours = hub_pair(transformers.LlavaOnevisionProcessor, tmp_path, byte_bpe(["<image>", "<video>"]),
                        transformers.LlavaOnevisionImageProcessorPil(**ONEVISION_IMAGE), fields)
    assert isinstance(ours, LlavaOnevisionProcessor)
    big = random_image(200, 90, 5)
    # one image per prompt (anyres tiles), then a prompt with two images (base tile each) and one with one
    assert_same(ours, hf, CLIP_STD, text=["<image> a", "<image> b"], images=[big, IMAGES[0]], padding=True,
                padding_side=padding_side)
    out = assert_same(ours, hf, CLIP_STD, text=["<image><image> two", "<image> one"],
                      images=[[IMAGES[0], IMAGES[1]], [big]], padding=True, padding_side=padding_side)
    assert out["batch_num_images"].tolist() == [2, 1]
    assert (out["input_ids"][0] == ours.image_token_id).sum() == 2 * (4 + 1)  # by hand: base tile + newline, twice


@pytest.mark.parametrize("cls", ["Qwen2VLProcessor", "Qwen2_5_VLProcessor"])
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_qwen2_vl_equals_hf(tmp_path, cls, padding_side):
    specials = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    tokenizer = byte_bpe(specials, bos=None, eos="<|im_end|>", pad="<|endoftext|>", add_bos=False)
    image_processor = transformers.Qwen2VLImageProcessorPil(min_pixels=28 * 28 * 2, max_pixels=28 * 28 * 12)
    hf, ours = hub_pair(getattr(transformers, cls), tmp_path, tokenizer, image_processor,
                        dict(image_token="<|image_pad|>", video_token="<|video_pad|>"))
    assert isinstance(ours, Qwen2VLProcessor)
    text = ["<|vision_start|><|image_pad|><|vision_end|>What is it?",
            "two <|vision_start|><|image_pad|><|vision_end|> and <|vision_start|><|image_pad|><|vision_end|>"]
    images = [random_image(60, 100, 6), random_image(30, 30, 7), random_image(200, 41, 8)]
    out = assert_same(ours, hf, min(image_processor.image_std), text=text, images=images, padding=True,
                      padding_side=padding_side)
    assert "mm_token_type_ids" in out  # Qwen2-VL returns them unasked
    grid = out["image_grid_thw"]
    assert (out["mm_token_type_ids"] == 1).sum() == int((grid.prod(-1) // 4).sum())  # by hand: t*h*w / merge^2


@pytest.fixture(scope="module")
def blip2_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("blip2")
    hf = transformers.Blip2Processor(image_processor=transformers.BlipImageProcessorPil(size={"height": 20, "width": 20}),
                                     tokenizer=byte_bpe([], bos="</s>", eos="</s>", pad="<pad>"), num_query_tokens=4)
    return saved_pair(hf, root)


@pytest.mark.parametrize("kwargs", [dict(padding=True), dict(padding=True, padding_side="left"),
                                    dict(padding="max_length", max_length=20, truncation=True),
                                    dict(padding=True, max_length=9, truncation=True)])
def test_blip2_equals_hf(blip2_folder, kwargs):
    hf, ours = blip2_folder
    assert isinstance(ours, Blip2Processor)
    texts = ["Question: what is it? Answer:", "a photo of"]
    out = assert_same(ours, hf, CLIP_STD, text=texts, images=IMAGES[:2], **kwargs)
    assert out["input_ids"][:, :4].eq(ours.query_token_id).all()  # the queries' slots come first
    assert_same(ours, hf, CLIP_STD, text=texts, **kwargs)  # no images: no query tokens


def test_blip2_adds_the_image_token_a_folder_lacks(tmp_path):
    """A tokenizer without <image>: HF's Blip2Processor adds it at the next id, and so do we."""
    hf = transformers.Blip2Processor(image_processor=transformers.BlipImageProcessorPil(size={"height": 20, "width": 20}),
                                     tokenizer=byte_bpe([], bos="</s>", eos="</s>"), num_query_tokens=3)
    hf.tokenizer.save_pretrained(tmp_path)
    hf.image_processor.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer.json").read_text())
    config["added_tokens"] = [t for t in config["added_tokens"] if t["content"] != "<image>"]
    (tmp_path / "tokenizer.json").write_text(json.dumps(config))
    tok_cfg = json.loads((tmp_path / "tokenizer_config.json").read_text())
    tok_cfg = {k: v for k, v in tok_cfg.items() if k not in ("image_token", "added_tokens_decoder")}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
    (tmp_path / "processor_config.json").write_text(json.dumps({"processor_class": "Blip2Processor",
                                                                 "num_query_tokens": 3}))
    hf, ours = transformers.AutoProcessor.from_pretrained(tmp_path), weights_convert.load_processor(tmp_path)
    assert_same(ours, hf, CLIP_STD, text=["a photo of", "x"], images=IMAGES[:2], padding=True)


@pytest.mark.parametrize("kwargs", [dict(padding=True), dict(padding=True, padding_side="left"),
                                    dict(padding="max_length", max_length=16, truncation=True)])
def test_instructblip_equals_hf(tmp_path, kwargs):
    hf = transformers.InstructBlipProcessor(
        image_processor=transformers.BlipImageProcessorPil(size={"height": 20, "width": 20}),
        tokenizer=byte_bpe([], bos="</s>", eos="</s>"), qformer_tokenizer=bert_tokenizer(tmp_path / "bert"),
        num_query_tokens=5)
    hf, ours = saved_pair(hf, tmp_path / "saved")
    assert isinstance(ours, InstructBlipProcessor)
    out = assert_same(ours, hf, CLIP_STD, text=["What is in this image?", "describe the picture"], images=IMAGES[:2],
                      **kwargs)
    assert {"qformer_input_ids", "qformer_attention_mask"} <= set(out)


@pytest.mark.parametrize("family", ["CLIPProcessor", "BlipProcessor", "SiglipProcessor"])
def test_dual_encoders_equal_hf(tmp_path, family):
    if family == "BlipProcessor":
        image_processor = transformers.BlipImageProcessorPil(size={"height": 20, "width": 20})
        tokenizer = bert_tokenizer(tmp_path / "bert")
    elif family == "SiglipProcessor":
        image_processor = transformers.SiglipImageProcessorPil(size={"height": 16, "width": 16})
        tokenizer = byte_bpe([], add_bos=False)
    else:
        image_processor, tokenizer = clip_image_processor(), byte_bpe([])
    hf, ours = saved_pair(getattr(transformers, family)(image_processor=image_processor, tokenizer=tokenizer),
                          tmp_path / "saved")
    assert type(ours) is Processor
    std = min(image_processor.image_std)
    for kwargs in (dict(padding=True), dict(padding="max_length", max_length=12, truncation=True)):
        assert_same(ours, hf, std, text=["a photo of a cat", "red circle"], images=IMAGES[:2], **kwargs)
    assert_same(ours, hf, std, text="a photo of a cat")
    assert_same(ours, hf, std, images=IMAGES)


def test_parity_checkpoint_checks_the_whole_processor(tmp_path):
    """`parity --checkpoint`'s processor rows on a folder with a chat template: all equal."""
    from minivlm.parity.checkpoint import check_processor
    from minivlm.processing.reference_templates import LLAVA_1_5
    hf = transformers.LlavaProcessor(image_processor=clip_image_processor(), tokenizer=byte_bpe(["<image>"]),
                                     patch_size=6, vision_feature_select_strategy="default",
                                     num_additional_image_tokens=1, chat_template=LLAVA_1_5)
    hf.save_pretrained(tmp_path)
    rows = check_processor(tmp_path)
    assert [r[1] for r in rows] == ["output keys", "attention_mask", "input_ids", "pixel_values"]
    assert all(ok for *_, ok in rows), rows


@pytest.mark.parametrize("strategy", ["default", "full"])
def test_processor_from_a_model_config_counts_as_the_model(strategy):
    """A processor composed in memory from a model's config (cfg.processor_fields(): what a trace or a
    training loop builds) writes as many <image> tokens as the model makes features: LLaVA's
    features_per_image, LLaVA-NeXT's per-image count, on odd sizes."""
    from minivlm.models.llava import LlavaConfig, llava_vision_config
    from minivlm.models.llava_next import LlavaNextConfig
    from minivlm.processing.llava_next import LlavaNextImageProcessor
    from minivlm.processing.processors import CLIP_DEFAULTS, ImageProcessor
    from minivlm.text.llama_config import LlamaConfig
    folder_tokenizer = byte_bpe(["<image>"])
    import tempfile
    with tempfile.TemporaryDirectory() as folder:
        folder_tokenizer.save_pretrained(folder)
        tokenizer = weights_convert.load_tokenizer(folder)
    vision = llava_vision_config(image_size=30, patch_size=6, hidden_size=32, num_layers=2, num_heads=4,
                                 intermediate_size=37)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=40, num_hidden_layers=1,
                       num_attention_heads=4, num_key_value_heads=2)
    cfg = LlavaConfig(vision_config=vision, text_config=text, vision_feature_select_strategy=strategy,
                      image_token_index=tokenizer.token_to_id("<image>"))
    crop = dict(CLIP_DEFAULTS, size={"shortest_edge": 30}, crop_size={"height": 30, "width": 30})
    processor = LlavaProcessor(tokenizer, ImageProcessor(**crop), **cfg.processor_fields())
    out = processor(text="<image> hi", images=IMAGES[0], return_tensors="pt")
    assert int((out["input_ids"] == cfg.image_token_index).sum()) == cfg.features_per_image
    if strategy == "default":
        pins = [[30, 60], [60, 30], [60, 60], [90, 30]]
        next_cfg = LlavaNextConfig(vision_config=vision, text_config=text, image_grid_pinpoints=pins,
                                   image_token_index=cfg.image_token_index)
        image_processor = LlavaNextImageProcessor(**crop, do_pad=True, image_grid_pinpoints=pins)
        processor = LlavaNextProcessor(tokenizer, image_processor, **next_cfg.processor_fields())
        images = IMAGES + [random_image(5, 301, 4)]
        out = processor(text=["<image><image>", "<image><image>"], images=images, padding=True, return_tensors="pt")
        runs = [int(n) for n in (out["input_ids"] == cfg.image_token_index).sum(1)]
        geometry = next_cfg.geometry()
        from minivlm.models.llava_next import LlavaNextForConditionalGeneration
        model = LlavaNextForConditionalGeneration(next_cfg)
        model_counts = [model.image_tokens(tuple(im.size[::-1]), geometry) for im in images]  # (height, width)
        assert runs == [sum(model_counts[:2]), sum(model_counts[2:])]


@pytest.mark.parametrize("family", ["llava-1.5", "llava-v1.6"])
def test_real_settings_on_the_photo(tmp_path, family):
    """The hub's real processor settings (CLIP 336 px, patch 14, 'default': 576 tokens; v1.6's anyres
    pinpoints) on the photo a learner follows and an odd strip, left padding."""
    import matplotlib.cbook
    photo = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg"))
    photo.load()
    crop = dict(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    fields = dict(patch_size=14, vision_feature_select_strategy="default", num_additional_image_tokens=1)
    if family == "llava-1.5":
        hf = transformers.LlavaProcessor(transformers.CLIPImageProcessorPil(**crop), byte_bpe(["<image>"]), **fields)
    else:
        pins = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
        hf = transformers.LlavaNextProcessor(transformers.LlavaNextImageProcessorPil(**crop, image_grid_pinpoints=pins),
                                             byte_bpe(["<image>"]), **fields)
    hf, ours = saved_pair(hf, tmp_path)
    out = assert_same(ours, hf, CLIP_STD, text=["USER: <image>\nWho is this? ASSISTANT:", "<image> strip"],
                      images=[photo, random_image(40, 500)], padding=True, padding_side="left")
    if family == "llava-1.5":
        assert int((out["input_ids"][0] == ours.image_token_id).sum()) == 576


def test_hub_clip_folder_without_processor_class(tmp_path):
    """openai/clip-* folders name no processor class (an old feature_extractor_type, CLIPTokenizer's
    vocab.json + merges.txt): AutoProcessor falls back to config.json's model_type, and so do we."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    tk = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.train_from_iterator([c.lower() for c in CORPUS], trainers.BpeTrainer(
        vocab_size=300, show_progress=False, end_of_word_suffix="</w>", special_tokens=["<|startoftext|>", "<|endoftext|>"]))
    vocab = tk.get_vocab()
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    merges = json.loads(tk.to_str())["model"]["merges"]
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(m if isinstance(m, str) else " ".join(m)
                                                                     for m in merges) + "\n")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "CLIPTokenizer"}))
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({
        "feature_extractor_type": "CLIPFeatureExtractor", "crop_size": 24, "size": 24, "do_center_crop": True,
        "resample": 3, "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "clip", "architectures": ["CLIPModel"]}))
    hf, ours = transformers.AutoProcessor.from_pretrained(tmp_path), weights_convert.load_processor(tmp_path)
    assert type(hf).__name__ == "CLIPProcessor" and type(ours) is Processor
    assert_same(ours, hf, CLIP_STD, text=["a photo of a cat", "red circle blue square"], images=IMAGES[:2], padding=True)
