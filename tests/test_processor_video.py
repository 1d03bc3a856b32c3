"""The processors' video path. transformers' video processors need torchvision (not installed), so
it is checked by hand (frame sizes, pixels, grids and token counts computed here from the rules)
and through the model: transformers' model, fed what our processor made, raises unless every run
of placeholders matches the features it computes, and its logits must equal ours."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import weights_convert
from minivlm.parity import llava_onevision as onevision_cases
from minivlm.parity import qwen2_vl as qwen_cases
from minivlm.parity.harness import build_seeded, convert_reference
from minivlm.processing.image import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

transformers = pytest.importorskip("transformers")
from test_processor import byte_bpe, random_image  # noqa: E402


def video(frames, height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (frames, height, width, 3), dtype=np.uint8)


def write_folder(folder, tokenizer, image_processor, processor_config, video_config=None):
    tokenizer.save_pretrained(folder)
    image_processor.save_pretrained(folder)
    (folder / "processor_config.json").write_text(json.dumps(processor_config))
    if video_config is not None:
        (folder / "video_preprocessor_config.json").write_text(json.dumps(video_config))
    return weights_convert.load_processor(folder)


def same_logits(reference, inputs):
    ours = convert_reference(reference)
    with torch.no_grad():
        expected, got = reference(**inputs).logits, ours(**inputs).logits
    valid = inputs["attention_mask"].bool()
    assert (expected - got)[valid].abs().max() <= 1e-4


def test_onevision_video_by_hand_and_through_the_model(tmp_path):
    tokenizer = byte_bpe(["<image>", "<video>"])
    image_processor = transformers.LlavaOnevisionImageProcessorPil(
        size={"height": 12, "width": 12}, image_grid_pinpoints=onevision_cases.PINPOINTS)
    video_config = {"video_processor_type": "LlavaOnevisionVideoProcessor", "size": {"height": 12, "width": 12}}
    processor = write_folder(tmp_path, tokenizer, image_processor,
                             {"processor_class": "LlavaOnevisionProcessor", "num_image_tokens": 4,
                              "vision_feature_select_strategy": "full", "vision_aspect_ratio": "anyres_max_9"},
                             video_config)
    clip = video(3, 20, 30)
    inputs = processor(text=["<video> what happens?", "<image> and this"], videos=clip, images=random_image(40, 90),
                       padding=True, padding_side="left", return_tensors="pt")
    # by hand: every frame resized to 12 x 12 (bicubic), rescaled, CLIP-normalised; (V, F, 3, 12, 12)
    mean, std = np.array(OPENAI_CLIP_MEAN), np.array(OPENAI_CLIP_STD)
    frames = [(np.asarray(Image.fromarray(f).resize((12, 12), Image.BICUBIC)) / 255 - mean) / std for f in clip]
    expected = torch.tensor(np.stack(frames).transpose(0, 3, 1, 2)[None], dtype=torch.float32)
    assert inputs["pixel_values_videos"].shape == (1, 3, 3, 12, 12)
    assert (inputs["pixel_values_videos"] - expected).abs().max() <= 1 / 255 / std.min() + 1e-6
    # by hand: 2 x 2 patches a frame -> ceil(2/2)^2 = 1 pooled token a frame, + 1 newline
    assert int((inputs["input_ids"][0] == processor.video_token_id).sum()) == 3 * 1 + 1
    reference = build_seeded(lambda: onevision_cases.build_reference(
        dict(image_token_index=processor.image_token_id, video_token_index=processor.video_token_id),
        dict(vocab_size=len(tokenizer))))
    same_logits(reference, dict(inputs))


@pytest.mark.parametrize("version", ["2", "2.5"])
def test_qwen2_vl_video_by_hand_and_through_the_model(tmp_path, version):
    specials = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    tokenizer = byte_bpe(specials, bos=None, eos="<|im_end|>", pad="<|endoftext|>", add_bos=False)
    sizes = dict(patch_size=4, merge_size=2, temporal_patch_size=2)
    image_processor = transformers.Qwen2VLImageProcessorPil(min_pixels=8 * 8 * 2, max_pixels=8 * 8 * 20, **sizes)
    video_config = {"video_processor_type": "Qwen2VLVideoProcessor", "min_pixels": 8 * 8 * 2,
                    "max_pixels": 8 * 8 * 6, **sizes}
    cls = "Qwen2VLProcessor" if version == "2" else "Qwen2_5_VLProcessor"
    processor = write_folder(tmp_path, tokenizer, image_processor, {"processor_class": cls}, video_config)
    clip = video(5, 30, 45)
    text = ["<|vision_start|><|video_pad|><|vision_end|>what moves?",
            "<|vision_start|><|image_pad|><|vision_end|> and a video <|vision_start|><|video_pad|><|vision_end|>"]
    inputs = processor(text=text, videos=[clip, clip[:2]], images=random_image(33, 50), padding=True,
                       return_tensors="pt")
    # by hand: 30 x 45 -> sides rounded to multiples of 8 (32 x 48 = 1536 px) is over 8*8*6 = 384, so
    # scaled by beta = sqrt(30*45/384) = 1.875 and floored to multiples of 8: 16 x 24 -> 4 x 6 patches of 4;
    # 5 frames padded to 6 -> 3 temporal slices of 2; the 2-frame clip -> 1.
    assert inputs["video_grid_thw"].tolist() == [[3, 4, 6], [1, 4, 6]]
    assert inputs["pixel_values_videos"].shape == (3 * 24 + 24, 3 * 2 * 4 * 4)
    counts = (inputs["mm_token_type_ids"] == 2).sum(1).tolist()
    assert counts == [3 * 24 // 4, 24 // 4]          # t * h * w / merge^2
    if version == "2.5":
        assert torch.equal(inputs["second_per_grid_ts"], torch.tensor([2 / 24, 2 / 24]))  # T / 24 fps (no metadata)
    make = qwen_cases.build_reference
    ids = {k: processor.token_id(t) for k, t in (("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
                                                 ("vision_start_token_id", "<|vision_start|>"),
                                                 ("vision_end_token_id", "<|vision_end|>"))}
    reference = build_seeded(lambda: make(dict(vocab_size=len(tokenizer)), version=version))
    reference.config.update(ids)
    for k, v in ids.items():
        setattr(reference.model.config, k, v)
    same_logits(reference, dict(inputs))
