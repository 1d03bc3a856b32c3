"""One module per model family; importing it registers its architectures."""
from . import vit  # noqa: F401
from . import llama  # noqa: F401
from . import clip, siglip  # noqa: F401
from . import blip  # noqa: F401
from . import llava  # noqa: F401
from . import llava_next  # noqa: F401
from . import llava_onevision  # noqa: F401
from . import qwen2_vl  # noqa: F401
from . import opt  # noqa: F401
from . import blip2  # noqa: F401
