from .vit import ViTForImageClassification, ViTModel
from .clip import CLIPConfig, CLIPModel, CLIPTextModel, CLIPVisionModel, clip_text_config, clip_vision_config
from .siglip import SiglipConfig, SiglipModel, SiglipTextModel, SiglipVisionModel, siglip_text_config, siglip_vision_config
from .blip import (BlipConfig, BlipForConditionalGeneration, BlipForImageTextRetrieval, BlipForQuestionAnswering, blip_vision_config)
