"""The one check every VLM runs where pixel_values enter it: they must be the image processor's
output — rescaled, normalised floats — not raw 8-bit pixels.

A uint8 image handed straight to a model would be cast to float and run: values 0..255 where the
tower was trained on roughly -2..2, a confident wrong answer with no error. transformers does the
same silently; minivlm refuses, and says where normalised pixels come from.
"""
import torch


def require_float_pixels(pixel_values: torch.Tensor, what: str = "pixel_values") -> None:
    """Raise unless pixel_values is a floating-point tensor (the image processor's output)."""
    if torch.is_tensor(pixel_values) and not pixel_values.is_floating_point():
        raise ValueError(f"{what} must be floating-point, rescaled and normalised by the image processor "
                         f"(weights_convert.load_processor or load_image_processor); got {pixel_values.dtype} "
                         f"values in [{int(pixel_values.min())}, {int(pixel_values.max())}], which look like raw "
                         f"pixels")
