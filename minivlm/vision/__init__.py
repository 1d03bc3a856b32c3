from .config import VisionConfig
from .vit import PatchEmbedding, VisionTransformer
