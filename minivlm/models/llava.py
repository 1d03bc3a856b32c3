"""LLaVA (Liu et al. 2023, "Visual Instruction Tuning"; LLaVA-1.5, Liu et al. 2023b): a CLIP vision
tower, a small projector and a LLaMA decoder, glued by writing image features into the prompt.

    pixel_values (I, 3, H, W)
      -> vision_tower, every hidden state kept          hidden_states[k]: (I, 1 + N, D_v)
      -> select layer(s) (vision_feature_layer, -2 by default: the penultimate layer)
         and drop [CLS] ('default') or keep it ('full')  (I, N, D_v)
      -> multi_modal_projector                         (I, N, D_t)
    input_ids (B, L) holding one <image> token per image feature (HF's "expanded" convention)
      -> embed_tokens                                  (B, L, D_t)
      -> image features written at the <image> positions, in order
      -> the LLaMA decoder and lm_head                 logits (B, L, V)

Names and numbers follow transformers' LlavaForConditionalGeneration. The original repo's other
convention — one placeholder per image, spliced so the sequence grows — is in llava_splice.py.
"""
from dataclasses import dataclass, field

import torch
from torch import nn

from ..blocks.token_ids import check_one_input, lookup_tokens
from ..generation import generate, special_token_defaults
from ..processing.anyres import tokens_per_image
from ..text.llama import LlamaForCausalLM
from ..text.llama_config import LlamaConfig
from ..vision import VisionConfig, VisionTransformer
from .clip import clip_vision_config
from .projector import Projector, build_projector


def llava_vision_config(**overrides) -> VisionConfig:
    """LLaVA-1.5's tower (CLIP ViT-L/14 at 336 px, HF LlavaConfig's default); overrides set the sizes."""
    cfg = dict(image_size=336, patch_size=14, hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096)
    return clip_vision_config(**{**cfg, **overrides})


@dataclass
class LlavaConfig:
    vision_config: VisionConfig = field(default_factory=llava_vision_config)
    text_config: LlamaConfig = field(default_factory=LlamaConfig)
    image_token_index: int = 32000              # HF's image_token_id: the <image> placeholder's id
    image_seq_length: int = 576                 # features per image (the processor writes this many tokens)
    projector_hidden_act: str = "gelu"
    multimodal_projector_bias: bool = True
    projector_type: str | None = None           # the original repo's mm_projector_type ('linear', 'mlp2x_gelu');
                                                # None = HF's linear_1 -> act -> linear_2
    vision_feature_layer: int | list = -2       # hidden_states index, or a list whose features are concatenated
    vision_feature_select_strategy: str = "default"   # 'default' drops the first token ([CLS]), 'full' keeps all
    tie_word_embeddings: bool = False

    def __post_init__(self):
        check_feature_selection(self.vision_feature_layer, self.vision_feature_select_strategy,
                                self.vision_config.num_layers)
        if self.tie_word_embeddings:
            self.text_config.tie_word_embeddings = True

    @property
    def image_token_id(self):
        return self.image_token_index

    @property
    def num_feature_layers(self):
        return 1 if isinstance(self.vision_feature_layer, int) else len(self.vision_feature_layer)

    def processor_fields(self):
        """The LlavaProcessor / LlavaNextProcessor fields (processor_config.json's) under which the
        processor counts an image's tokens as this model counts its features: e.g.
        LlavaProcessor(tokenizer, image_processor, **cfg.processor_fields())."""
        v = self.vision_config
        return dict(patch_size=v.patch_size, vision_feature_select_strategy=self.vision_feature_select_strategy,
                    num_additional_image_tokens=int(v.class_token))

    @property
    def features_per_image(self):
        """How many <image> tokens one image needs: the tower's tokens (patches, + [CLS] if it has one),
        less the first with 'default'."""
        return tokens_per_image(self.vision_config.num_patches, self.vision_config.class_token,
                                self.vision_feature_select_strategy)


def check_feature_selection(layer: int | list[int], strategy: str, num_layers: int) -> None:
    if strategy not in ("default", "full"):
        raise ValueError(f"vision_feature_select_strategy must be 'default' or 'full', got {strategy!r}")
    layers = [layer] if isinstance(layer, int) else list(layer)
    if not layers:
        raise ValueError("vision_feature_layer is an empty list; give at least one layer index")
    for k in layers:
        # hidden_states has num_layers + 1 entries: [0] embeddings, [i] after layer i.
        if not isinstance(k, int) or not -(num_layers + 1) <= k <= num_layers:
            raise ValueError(f"vision_feature_layer {k!r} is out of range for a tower of {num_layers} layers "
                             f"(valid: {-(num_layers + 1)} .. {num_layers})")


def select_features(hidden_states: tuple[torch.Tensor, ...], layer: int | list[int], strategy: str) -> torch.Tensor:
    """The tower's hidden states -> the features LLaVA projects.

    hidden_states: tuple of (I, 1 + N, D_v), [0] the embeddings, [i] after layer i.
    One layer: that state; a list: the states concatenated along the feature axis (I, N, k * D_v).
    'default' drops the first token: [CLS] (LLaVA: the grid of patches is what the LM should read);
    with a tower that has none (SigLIP) it is the first patch, as transformers does (tokens_per_image).
    """
    layers = [layer] if isinstance(layer, int) else layer
    return join_features([hidden_states[k] for k in layers], strategy)


def tower_features(tower: VisionTransformer, pixel_values: torch.Tensor, layer: int | list[int],
                   strategy: str) -> torch.Tensor:
    """select_features(tower(pixel_values, output_hidden_states=True).hidden_states, layer, strategy),
    running only the tower layers the selection reads (VisionTransformer.hidden_states_at): with
    LLaVA's -2 the last layer is skipped. tests/test_fast_forward.py checks the two are equal."""
    layers = [layer] if isinstance(layer, int) else layer
    return join_features(tower.hidden_states_at(pixel_values, layers), strategy)


def join_features(picked: list[torch.Tensor], strategy: str) -> torch.Tensor:
    """The picked hidden states (I, 1 + N, D_v) each -> (I, N, k * D_v): see select_features."""
    if strategy == "default":
        picked = [h[:, 1:] for h in picked]  # (I, N, D_v)
    return torch.cat(picked, dim=-1) if len(picked) > 1 else picked[0]


def merge_image_features(inputs_embeds: torch.Tensor, input_ids: torch.Tensor, image_features: torch.Tensor,
                         image_token_id: int, what: str = "image") -> torch.Tensor:
    """Write the image (or video) features into the text embeddings at their placeholder tokens.

    inputs_embeds (B, L, D), input_ids (B, L), image_features (I, N, D) per image, or (M, D) already
    flat (Qwen2-VL's packed tower) -> (B, L, D). The k-th placeholder in reading order (row by row)
    receives the k-th feature vector, the same order HF's masked_scatter uses; so image i of the
    batch fills the i-th run of N tokens. Every VLM here merges through this one function.
    """
    is_image = input_ids == image_token_id  # (B, L)
    features = image_features.reshape(-1, inputs_embeds.shape[-1])  # (I * N, D)
    n_tokens, n_features = int(is_image.sum()), features.shape[0]
    if n_tokens != n_features:
        given = (f"the {image_features.shape[0]} {what}(s) give {n_features} feature(s) "
                 f"({image_features.shape[1]} per {what})" if image_features.dim() == 3 else
                 f"the {what}s give {n_features} feature(s)")
        raise ValueError(f"{what} tokens and {what} features do not match: input_ids hold {n_tokens} {what} "
                         f"token(s) (id {image_token_id}) but {given}; the prompt needs one {what} token per feature "
                         f"(build it with the model's processor: weights_convert.load_processor)")
    return inputs_embeds.masked_scatter(is_image[..., None], features.to(inputs_embeds.dtype))


class LlavaForConditionalGeneration(nn.Module):
    def __init__(self, cfg: LlavaConfig):
        super().__init__()
        self.config = cfg
        self.vision_tower = VisionTransformer(cfg.vision_config)
        in_dim = cfg.vision_config.hidden_size * cfg.num_feature_layers
        out_dim = cfg.text_config.hidden_size
        if cfg.projector_type is None:
            self.multi_modal_projector = Projector(in_dim, out_dim, depth=2, act=cfg.projector_hidden_act,
                                                   bias=cfg.multimodal_projector_bias)
        else:
            self.multi_modal_projector = build_projector(cfg.projector_type, in_dim, out_dim,
                                                         bias=cfg.multimodal_projector_bias)
        self.language_model = LlamaForCausalLM(cfg.text_config)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.language_model.get_input_embeddings()

    def get_image_features(self, pixel_values: torch.Tensor, vision_feature_layer: int | list[int] | None = None,
                           vision_feature_select_strategy: str | None = None) -> torch.Tensor:
        """pixel_values (I, 3, H, W) -> projected features (I, N, D_t)."""
        layer = self.config.vision_feature_layer if vision_feature_layer is None else vision_feature_layer
        strategy = vision_feature_select_strategy or self.config.vision_feature_select_strategy
        check_feature_selection(layer, strategy, self.config.vision_config.num_layers)
        return self.multi_modal_projector(tower_features(self.vision_tower, pixel_values, layer, strategy))

    def embed(self, input_ids, pixel_values=None, vision_feature_layer=None, vision_feature_select_strategy=None):
        """Token embeddings with the image features written in: (B, L, D_t), and the features (I*N, D_t)."""
        inputs_embeds = lookup_tokens(self.get_input_embeddings(), input_ids)  # (B, L, D_t)
        if pixel_values is None:
            return inputs_embeds, None
        features = self.get_image_features(pixel_values, vision_feature_layer, vision_feature_select_strategy)
        merged = merge_image_features(inputs_embeds, input_ids, features, self.config.image_token_index)
        return merged, features.reshape(-1, features.shape[-1])

    def forward(self, input_ids=None, pixel_values=None, attention_mask=None, position_ids=None,
                past_key_values=None, inputs_embeds=None, vision_feature_layer=None,
                vision_feature_select_strategy=None, labels=None, use_cache=False, logits_to_keep=0,
                output_hidden_states=False):
        check_one_input(input_ids, inputs_embeds)
        image_features = None
        if input_ids is not None and pixel_values is not None:
            inputs_embeds, image_features = self.embed(input_ids, pixel_values, vision_feature_layer,
                                                       vision_feature_select_strategy)
            input_ids = None
        elif input_ids is not None and (past_key_values is None or len(past_key_values) == 0):
            # a prompt without pixels must hold no image token; a decode step's ids (the model's own
            # picks) go to the decoder unread, so the host never waits on the device there
            n = int((input_ids == self.config.image_token_index).sum())
            if n:
                raise ValueError(f"input_ids hold {n} image token(s) (id {self.config.image_token_index}) "
                                 f"but no pixel_values were given")
        elif pixel_values is not None:
            raise ValueError("pixel_values need input_ids to find the image tokens; with inputs_embeds, "
                             "write the image features in yourself (see llava_splice.py)")
        out = self.language_model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                  past_key_values=past_key_values, inputs_embeds=inputs_embeds, labels=labels,
                                  use_cache=use_cache, logits_to_keep=logits_to_keep,
                                  output_hidden_states=output_hidden_states)
        if image_features is not None:
            out.image_hidden_states = image_features  # (I * N, D_t), as HF returns it
        return out

    def generate(self, input_ids=None, pixel_values=None, attention_mask=None, inputs_embeds=None,
                 **kwargs):
        """Prefill on the image+text embeddings, then cached decoding on ids; greedy by default.
        Returns prompt + new ids like HF (only the new ones when the prompt came as inputs_embeds)."""
        special_token_defaults(self, self.config.text_config, kwargs)
        if pixel_values is not None:
            kwargs["pixel_values"] = pixel_values  # used by the prefill step only
        return generate(self, input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                        **kwargs)


# Two-stage training (LLaVA §4.2): which parts learn in which stage. The vision tower never does.
STAGES = {
    1: ("multi_modal_projector",),                    # feature alignment: the projector alone
    2: ("multi_modal_projector", "language_model"),   # instruction tuning: projector + LM
}


def freeze(model: nn.Module, stage: int | str) -> list[str]:
    """Set requires_grad for a training stage (1 or 2, or "pretrain" / "finetune"); returns the names
    of the trainable parameters. Everything outside the stage's parts is frozen."""
    stage = {"pretrain": 1, "finetune": 2}.get(stage, stage)
    if stage not in STAGES:
        raise ValueError(f"stage must be 1 ('pretrain': projector only) or 2 ('finetune': projector + LM), "
                         f"got {stage!r}")
    trainable = []
    for name, p in model.named_parameters():
        p.requires_grad_(name.split(".")[0] in STAGES[stage])
        if p.requires_grad:
            trainable.append(name)
    return trainable
