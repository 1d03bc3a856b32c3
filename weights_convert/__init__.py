"""weights_convert: Hugging Face model folders in, minivlm models out — strictly.

    model = weights_convert.load_pretrained("hf_dir")             # dtype="auto": the checkpoint's own
    model = weights_convert.load_pretrained("hf_dir", dtype=torch.float32, device="cuda")
    proc = weights_convert.load_image_processor("hf_dir")
    tok = weights_convert.load_tokenizer("hf_dir")
    processor = weights_convert.load_processor("hf_dir")         # text + images (+ videos), as AutoProcessor
"""
from .engine import KeyMap, Rule, convert
from .errors import (CheckpointError, MissingConfigError, MissingWeightsError, ShapeMismatchError,
                     UnknownArchitectureError, UnusedWeightsError)
from .load import load_pretrained
from .processors import load_image_processor, load_processor
from .registry import ARCHITECTURES
from .tokenizers import load_tokenizer
