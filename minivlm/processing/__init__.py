"""Preprocessing: image ops (image.py), the configurable image processor (processors.py) and the
tokenizers (bpe.py and friends)."""
from .image import (center_crop, clamp_pixels, clamp_size, expand_to_square, load_image, resize,
                    resize_shortest_edge, rescale_and_normalize, shortest_edge_size, to_rgb)
from .processors import ImageProcessor, processor_from_config
