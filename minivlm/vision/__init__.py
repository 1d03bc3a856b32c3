from .config import VisionConfig
from .packed_vit import PackedVisionTransformer
from .vit import PatchEmbedding, VisionTransformer
