from .vit import ViTForImageClassification, ViTModel
