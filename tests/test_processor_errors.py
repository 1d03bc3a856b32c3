"""Bad input to a processor or a model: each a clear error naming what was expected and what came."""
import json

import numpy as np
import pytest
import torch

import weights_convert
from minivlm.parity import llava as llava_cases
from minivlm.parity import qwen2_vl as qwen_cases
from minivlm.parity.harness import build_seeded, convert_reference

transformers = pytest.importorskip("transformers")
from test_processor import IMAGES, byte_bpe, clip_image_processor, random_image, saved_pair  # noqa: E402


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    hf = transformers.LlavaProcessor(image_processor=clip_image_processor(), tokenizer=byte_bpe(["<image>"]),
                                     patch_size=6, vision_feature_select_strategy="default",
                                     num_additional_image_tokens=1)
    return saved_pair(hf, tmp_path_factory.mktemp("llava-errors"))[1]


def test_placeholders_and_images_disagree(llava):
    with pytest.raises(ValueError, match=r"hold 3 <image> placeholder\(s\) \[1, 2\] but 2 image\(s\) were given"):
        llava(text=["<image> a", "<image><image> b"], images=IMAGES[:2])
    with pytest.raises(ValueError, match=r"hold 1 <image> placeholder\(s\) \[1\] but 0 image\(s\)"):
        llava(text="<image> where is the picture?")
    with pytest.raises(ValueError, match=r"hold 0 <image> placeholder\(s\) \[0\] but 1 image\(s\)"):
        llava(text="no placeholder", images=IMAGES[0])


def test_truncation_that_cuts_image_tokens(llava):
    # 25 image tokens (5 x 5 patches, + [CLS] - 'default') after a few text tokens: max_length 10 cuts them
    with pytest.raises(ValueError, match=r"max_length=10 cuts prompt 0's <image> tokens: its images need 25, \d+ are left"):
        llava(text="USER: <image> what?", images=IMAGES[0], truncation=True, max_length=10)
    out = llava(text="USER: <image> what?", images=IMAGES[0], truncation=True, max_length=40)  # room enough
    assert (torch.tensor(out["input_ids"]) == llava.image_token_id).sum() == 25


def test_missing_and_unreadable_image_files(llava, tmp_path):
    with pytest.raises(FileNotFoundError, match="no image file at .*gone.png"):
        llava(text="<image> x", images=str(tmp_path / "gone.png"))
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ValueError, match="cannot read .*notes.png as an image"):
        llava(text="<image> x", images=str(tmp_path / "notes.png"))


def test_no_template_to_apply(llava):
    assert llava.chat_template is None
    with pytest.raises(ValueError, match="this processor has no chat template"):
        llava.apply_chat_template([{"role": "user", "content": "hi"}])


def test_unsupported_and_incomplete_folders(tmp_path):
    (tmp_path / "processor_config.json").write_text(json.dumps({"processor_class": "WhisperProcessor"}))
    with pytest.raises(weights_convert.CheckpointError, match="processor_class 'WhisperProcessor'.*supported: "):
        weights_convert.load_processor(tmp_path)
    byte_bpe(["<image>"]).save_pretrained(tmp_path)
    (tmp_path / "processor_config.json").write_text(json.dumps({"processor_class": "LlavaProcessor", "patch_size": 6}))
    with pytest.raises(weights_convert.MissingConfigError, match="needs an image processor config"):
        weights_convert.load_processor(tmp_path)
    with pytest.raises(weights_convert.MissingConfigError, match="no processor folder"):
        weights_convert.load_processor(tmp_path / "nowhere")


def test_models_refuse_integer_pixels():
    """uint8 pixels handed to a model directly (never rescaled or normalised): LLaVA ran them silently."""
    llava = convert_reference(build_seeded(llava_cases.build_reference))
    ids = torch.tensor([[1] + [llava_cases.IMAGE_TOKEN] * llava.config.features_per_image + [2]])
    side = llava.config.vision_config.image_size
    raw = torch.from_numpy(np.array(random_image(side, side))).permute(2, 0, 1)[None]  # (1, 3, H, W) uint8
    with pytest.raises(ValueError, match=r"pixel_values must be floating-point.*image processor.*got torch.uint8"):
        llava(input_ids=ids, pixel_values=raw)
    llava(input_ids=ids, pixel_values=raw.float() / 255)  # floats pass the check
    qwen = convert_reference(build_seeded(qwen_cases.build_reference))
    v = qwen.config.vision_config
    grid = torch.tensor([[1, 2, 2]])
    ids = torch.tensor([[1, qwen_cases.START, qwen_cases.IMAGE, qwen_cases.END]])
    pixels = torch.randint(0, 256, (4, 3 * v.temporal_patch_size * v.patch_size ** 2), dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"pixel_values must be floating-point.*got torch.uint8"):
        qwen(input_ids=ids, pixel_values=pixels, image_grid_thw=grid)
