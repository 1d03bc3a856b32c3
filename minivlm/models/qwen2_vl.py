"""Qwen2-VL (Wang et al. 2024, "Qwen2-VL: Enhancing Vision-Language Model's Perception of the World
at Any Resolution"): LLaVA's recipe with three switches and two new ideas.

    pixel_values (N, 3*2*14*14) + image_grid_thw (I, 3)   the processor's patches, any image size
      -> visual: PackedVisionTransformer                  Conv3d patches, 2-D RoPE, images kept apart
         -> PatchMerger (its pooler): 2x2 neighbours       (N / 4, D_t) LM tokens
    (pixel_values_videos + video_grid_thw: the same tower, frames in pairs)
    input_ids (B, L) with one <|image_pad|> / <|video_pad|> per merged token
      -> embed_tokens, features written at the placeholders (reading order)
      -> the Qwen2 decoder with M-RoPE: (3, B, L) positions (models/mrope_positions.py)
      -> lm_head                                           logits (B, L, V)

Names follow transformers' Qwen2VLForConditionalGeneration. Ours: visual (PackedVisionTransformer),
language_model (LlamaForCausalLM with the Qwen2 switches and rope_parameters["mrope_section"]).

Qwen2.5-VL (Bai et al. 2025) is the same class with four switches: RMSNorm and SwiGLU in the vision
blocks and the merger, window attention on most vision layers (VisionConfig.window_size,
full_attention_layers), and video time positions in seconds (tokens_per_second, second_per_grid_ts).
"""
from dataclasses import dataclass, field

import torch
from torch import nn

from ..blocks.token_ids import check_one_input, lookup_tokens
from ..generation import generate, prompt_positions, special_token_defaults
from ..processing.qwen2_vl import merged_tokens
from ..text.llama import LlamaForCausalLM
from ..text.llama_config import LlamaConfig
from ..vision import PackedVisionTransformer, VisionConfig
from .llava import merge_image_features
from .mrope_positions import rope_index, token_types


def qwen2_vl_vision_config(**overrides) -> VisionConfig:
    """Qwen2-VL's tower (HF Qwen2VLVisionConfig's defaults: 675M, 32 x 1280, patches 2 x 14 x 14)."""
    cfg = dict(image_size=14, patch_size=14, hidden_size=1280, num_layers=32, num_heads=16, intermediate_size=5120,
               hidden_act="quick_gelu", layer_norm_eps=1e-6, class_token=False, patch_bias=False,
               final_norm="none", pooler="patch_merger", packed=True, temporal_patch_size=2,
               spatial_merge_size=2, merger_size=3584)
    return VisionConfig(**{**cfg, **overrides})


@dataclass
class Qwen2VLConfig:
    vision_config: VisionConfig = field(default_factory=qwen2_vl_vision_config)
    text_config: LlamaConfig = field(default_factory=lambda: LlamaConfig(rope_parameters={
        "rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]}, qkv_bias=True))
    image_token_id: int = 151655
    video_token_id: int = 151656
    vision_start_token_id: int = 151652
    vision_end_token_id: int = 151653
    tokens_per_second: float | None = None    # Qwen2.5-VL: video time positions in seconds x this

    def __post_init__(self):
        if self.text_config.rope_parameters.get("mrope_section") is None:
            raise ValueError("Qwen2-VL's decoder needs rope_parameters['mrope_section'] (M-RoPE)")
        if self.vision_config.merger_size != self.text_config.hidden_size:
            raise ValueError(f"the PatchMerger writes {self.vision_config.merger_size}-wide tokens but the decoder "
                             f"is {self.text_config.hidden_size} wide")


class Qwen2VLForConditionalGeneration(nn.Module):
    def __init__(self, cfg: Qwen2VLConfig):
        super().__init__()
        self.config = cfg
        self.visual = PackedVisionTransformer(cfg.vision_config)
        self.language_model = LlamaForCausalLM(cfg.text_config)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.language_model.get_input_embeddings()

    def get_image_features(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor) -> torch.Tensor:
        """(N, C*T*p*p) patches of every image -> (N / m^2, D_t) LM tokens."""
        return self.visual(pixel_values, image_grid_thw).pooler_output

    def embed(self, input_ids, pixel_values=None, image_grid_thw=None, pixel_values_videos=None, video_grid_thw=None):
        """Token embeddings with image and video features written at their placeholders: (B, L, D_t)."""
        cfg = self.config
        inputs_embeds = lookup_tokens(self.get_input_embeddings(), input_ids)
        for what, pixels, grid, token in (("image", pixel_values, image_grid_thw, cfg.image_token_id),
                                          ("video", pixel_values_videos, video_grid_thw, cfg.video_token_id)):
            if pixels is None:
                continue
            if grid is None:
                raise ValueError(f"{what} pixels need {what}_grid_thw (t, h, w per {what}) to be read")
            name = "pixel_values" if what == "image" else "pixel_values_videos"
            features = self.visual(pixels, grid, what=name).pooler_output  # (N / m^2, D_t)
            # one LM token per m x m block: the count the processor writes placeholders with (merged_tokens)
            assert features.shape[0] == sum(merged_tokens(grid, cfg.vision_config.spatial_merge_size)), features.shape
            inputs_embeds = merge_image_features(inputs_embeds, input_ids, features, token, what)
        return inputs_embeds

    def position_ids(self, input_ids, attention_mask=None, image_grid_thw=None, video_grid_thw=None,
                     mm_token_type_ids=None, second_per_grid_ts=None):
        """(3, B, L) M-RoPE positions of a prompt (text only: the plain count over real tokens, x3)."""
        if image_grid_thw is None and video_grid_thw is None:
            mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
            return prompt_positions(mask).expand(3, -1, -1)
        if mm_token_type_ids is None:  # HF demands it; the placeholder ids say the same
            mm_token_type_ids = token_types(input_ids, self.config.image_token_id, self.config.video_token_id)
        return rope_index(mm_token_type_ids, image_grid_thw, video_grid_thw, attention_mask,
                          self.config.vision_config.spatial_merge_size, self.config.tokens_per_second,
                          second_per_grid_ts)[0]

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, labels=None, use_cache=False, pixel_values=None, pixel_values_videos=None,
                image_grid_thw=None, video_grid_thw=None, mm_token_type_ids=None, second_per_grid_ts=None,
                logits_to_keep=0, output_hidden_states=False):
        """position_ids: (3, B, L), or None to compute them from the grids (HF's forward without a cache:
        get_rope_index when grids are given, else past..past+L-1 on all three axes)."""
        check_one_input(input_ids, inputs_embeds)
        decoding = past_key_values is not None and len(past_key_values) > 0
        pixels_given = pixel_values is not None or pixel_values_videos is not None
        if input_ids is not None and (pixels_given or not decoding):  # a prompt: check, embed, write the features
            cfg = self.config
            if not decoding:
                for what, pixels, token in (("image", pixel_values, cfg.image_token_id),
                                            ("video", pixel_values_videos, cfg.video_token_id)):
                    n = int((input_ids == token).sum())
                    if n and pixels is None:
                        raise ValueError(f"input_ids hold {n} {what} token(s) (id {token}) but no "
                                         f"pixel_values{'_videos' if what == 'video' else ''} were given")
            inputs_embeds = self.embed(input_ids, pixel_values, image_grid_thw, pixel_values_videos, video_grid_thw)
            if position_ids is None and (image_grid_thw is not None or video_grid_thw is not None):
                if decoding:
                    raise ValueError("continuing from a cache needs position_ids (3, B, L); generate() passes them")
                position_ids = self.position_ids(input_ids, attention_mask, image_grid_thw, video_grid_thw,
                                                 mm_token_type_ids, second_per_grid_ts)
            input_ids = None
        elif input_ids is None and pixels_given:
            raise ValueError("pixels need input_ids to find their placeholder tokens")
        # a decode step's ids (the model's own picks) go to the decoder unread: the host never waits there
        return self.language_model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                   past_key_values=past_key_values, inputs_embeds=inputs_embeds, labels=labels,
                                   use_cache=use_cache, logits_to_keep=logits_to_keep,
                                   output_hidden_states=output_hidden_states)

    def generate(self, input_ids, attention_mask=None, pixel_values=None, pixel_values_videos=None,
                 image_grid_thw=None, video_grid_thw=None, mm_token_type_ids=None, second_per_grid_ts=None,
                 **kwargs):
        """Prefill on image/video + text with the prompt's M-RoPE positions, then cached decoding:
        each new token's three positions are the previous token's + 1 (HF's generate). Greedy by default."""
        special_token_defaults(self, self.config.text_config, kwargs)
        kwargs["position_ids"] = self.position_ids(input_ids, attention_mask, image_grid_thw, video_grid_thw,
                                                   mm_token_type_ids, second_per_grid_ts)
        for name, value in (("pixel_values", pixel_values), ("pixel_values_videos", pixel_values_videos),
                            ("image_grid_thw", image_grid_thw), ("video_grid_thw", video_grid_thw)):
            if value is not None:
                kwargs[name] = value  # used by the prefill step only
        return generate(self, input_ids=input_ids, attention_mask=attention_mask, **kwargs)
