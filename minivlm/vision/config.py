"""One config for every vision tower. CLIP, SigLIP and BLIP differ from ViT only in switches:

| switch        | ViT          | CLIP        | SigLIP      | BLIP        |
|---------------|--------------|-------------|-------------|-------------|
| class_token   | yes          | yes         | no          | yes         |
| patch_bias    | yes          | no          | yes         | yes         |
| pre_norm      | no           | yes         | no          | no          |
| final_norm    | sequence     | pooled      | sequence    | both        |
| pooler        | dense_tanh   | cls         | attention   | cls         |
| hidden_act    | gelu         | quick_gelu  | gelu_tanh   | gelu        |

Qwen2-VL's tower is the same stack with `packed=True`: any image size, patches flattened by the
processor (3-D: temporal_patch_size frames x p x p, a Conv3d), several images in one sequence,
2-D RoPE instead of the position table, no [CLS], no final norm, and the PatchMerger as its
"pooler" (vision/packed.py).
"""
from dataclasses import dataclass


@dataclass
class VisionConfig:
    image_size: int | tuple = 224     # (H, W) or one side of a square
    patch_size: int = 16
    num_channels: int = 3
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    qkv_bias: bool = True
    attention_dropout: float = 0.0
    class_token: bool = True          # prepend a learned [CLS] token
    patch_bias: bool = True           # bias in the patchify convolution
    pre_norm: bool = False            # LayerNorm on the embeddings before the encoder (CLIP)
    final_norm: str = "sequence"      # "sequence" | "pooled" | "both" | "none": where the last norm goes
    pooler: str = "dense_tanh"        # "dense_tanh" | "cls" | "attention" | "none"
    pooler_output_size: int | None = None   # ViT's pooler width (default hidden_size)
    pooler_act: str = "tanh"
    # Qwen2-VL switches (vision/packed.py)
    packed: bool = False              # input = flattened patches (N, C*T*p*p) + grid_thw, 2-D RoPE
    temporal_patch_size: int = 1      # frames per patch (Qwen2-VL: 2; an image is two equal frames)
    rope_theta: float = 10000.0       # 2-D RoPE base of a packed tower
    spatial_merge_size: int = 1       # the PatchMerger fuses m x m neighbours (pooler="patch_merger")
    merger_size: int | None = None    # the PatchMerger's output width (the LM's hidden size)
    packing: str = "split"            # "split": attention per image (fast) | "mask": one block-diagonal mask
    # Qwen2.5-VL switches: RMSNorm + SwiGLU blocks, and attention inside windows of window_size pixels
    # except on the full_attention_layers (vision/packed.py window_order)
    norm: str = "layer"               # "layer" | "rms", in the blocks and the PatchMerger
    gated_mlp: bool = False
    window_size: int | None = None
    full_attention_layers: tuple = ()

    def __post_init__(self):
        if self.final_norm not in ("sequence", "pooled", "both", "none"):
            raise ValueError(f"final_norm must be sequence|pooled|both|none, got {self.final_norm!r}")
        if self.pooler not in ("dense_tanh", "cls", "attention", "patch_merger", "none"):
            raise ValueError(f"pooler must be dense_tanh|cls|attention|patch_merger|none, got {self.pooler!r}")
        if self.packed and (self.class_token or self.pre_norm or self.final_norm != "none"):
            raise ValueError("a packed (Qwen2-VL) tower has no [CLS], pre_norm or final norm")
        if self.packing not in ("split", "mask"):
            raise ValueError(f"packing must be 'split' or 'mask', got {self.packing!r}")
        if self.pooler == "cls" and not self.class_token:
            raise ValueError("pooler='cls' needs class_token=True")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}")

    @property
    def image_hw(self):
        s = self.image_size
        return (s, s) if isinstance(s, int) else tuple(s)

    @property
    def grid(self):
        """(rows, cols) of patches at the configured image size."""
        h, w = self.image_hw
        return h // self.patch_size, w // self.patch_size

    @property
    def num_patches(self):
        rows, cols = self.grid
        return rows * cols

    @property
    def num_positions(self):
        return self.num_patches + int(self.class_token)
