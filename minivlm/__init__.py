"""minivlm: readable vision-language models that match the Hugging Face reference numerically."""
from .outputs import ModelOutput

__version__ = "0.1.0"
