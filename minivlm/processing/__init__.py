"""Preprocessing: image ops (image.py), the configurable image processor (processors.py) and the
hand-written BPE tokenizers (bpe.py -> pretokenize.py / decoding.py -> tokenizer.py, with the CLIP,
Llama 2 and tokenizer.json families in tokenizer_families.py)."""
from .image import (center_crop, clamp_pixels, clamp_size, expand_to_square, load_image, resize,
                    resize_shortest_edge, rescale_and_normalize, shortest_edge_size, to_rgb)
from .processors import ImageProcessor, processor_from_config
from .tokenizer import AddedToken, Tokenizer
from .tokenizer_families import clip_tokenizer, llama_tokenizer, tokenizer_from_json
