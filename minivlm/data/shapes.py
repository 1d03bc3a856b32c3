"""The synthetic shapes world: small images of coloured shapes, with captions and questions.

Everything is made on the fly from (seed, split, index), so nothing is downloaded and every
sample can be re-created exactly. Some colour/shape combinations are held out of training
(DEFAULT_HELD_OUT): a model that scores well on them has learned "red" and "triangle" as separate
ideas, not memorised "red triangle" — the zero-shot test of CLIP, and a fair test for BLIP/LLaVA.

    world = ShapesWorld(image_size=32)
    scene = world.scene(7, split="train")
    scene.image      # PIL RGB, 32 x 32
    scene.caption    # "a red circle on the left"
    scene.questions  # [("what color is the circle?", "red"), ("what shape is it?", "circle"), ...]
"""
import random
from dataclasses import dataclass, field

from PIL import Image, ImageDraw

COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 200, 30),
    "purple": (150, 60, 190),
    "orange": (240, 130, 20),
}
SHAPES = ("circle", "square", "triangle", "diamond")
# One unseen combination per colour (and every shape appears in some), so each word is still seen.
DEFAULT_HELD_OUT = (("red", "triangle"), ("green", "circle"), ("blue", "square"),
                    ("yellow", "diamond"), ("purple", "circle"), ("orange", "square"))
BACKGROUND = (245, 245, 240)
# Scene indices the evaluations draw from: far beyond any training index (training uses < ~10**6).
EVAL_START = 10**9
NUMBERS = ("zero", "one", "two", "three", "four")


@dataclass
class Shape:
    kind: str            # one of SHAPES
    color: str           # one of COLORS
    cx: float            # centre, as a fraction of the image side
    cy: float
    size: float          # half-width, as a fraction of the image side

    @property
    def where(self):
        """'left' / 'right' / 'middle' by the centre's x: the word the captions use."""
        return "left" if self.cx < 0.4 else "right" if self.cx > 0.6 else "middle"

    @property
    def name(self):
        return f"{self.color} {self.kind}"


@dataclass
class Scene:
    image: Image.Image
    shapes: list
    caption: str
    questions: list = field(default_factory=list)   # (question, answer) pairs
    index: int = 0
    split: str = "train"


def draw_shape(draw, shape, side):
    cx, cy, r = shape.cx * side, shape.cy * side, shape.size * side
    fill = COLORS[shape.color]
    if shape.kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape.kind == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape.kind == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    elif shape.kind == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape.kind!r}; known: {SHAPES}")


def render(shapes, image_size):
    image = Image.new("RGB", (image_size, image_size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for shape in shapes:
        draw_shape(draw, shape, image_size)
    return image


def caption_for(shapes):
    if len(shapes) == 1:
        s = shapes[0]
        return f"a {s.name} on the {s.where}" if s.where != "middle" else f"a {s.name} in the middle"
    ordered = sorted(shapes, key=lambda s: s.cx)  # read left to right
    return " and ".join(f"a {s.name}" for s in ordered)


def questions_for(shapes):
    qa = [("how many shapes are there?", NUMBERS[len(shapes)])]
    kinds = [s.kind for s in shapes]
    for s in shapes:
        if kinds.count(s.kind) == 1:  # only ask what has one answer
            qa.append((f"what color is the {s.kind}?", s.color))
    colors = [s.color for s in shapes]
    for s in shapes:
        if colors.count(s.color) == 1:
            qa.append((f"what shape is {s.color}?", s.kind))
    if len(shapes) == 1:
        qa.append(("where is the shape?", shapes[0].where))
    return qa


class ShapesWorld:
    """Deterministic scenes of 1..max_shapes shapes; `split` is "train" (held-out combinations
    never appear) or "test" (every shape is a held-out combination)."""

    def __init__(self, image_size=32, max_shapes=1, held_out=DEFAULT_HELD_OUT, seed=0):
        if image_size < 8:
            raise ValueError(f"image_size must be at least 8 pixels to draw a shape, got {image_size}")
        if not 1 <= max_shapes <= 3:
            raise ValueError(f"max_shapes must be 1, 2 or 3, got {max_shapes}")
        self.image_size, self.max_shapes, self.seed = image_size, max_shapes, seed
        self.held_out = tuple(held_out)
        every = [(c, s) for c in COLORS for s in SHAPES]
        self.combos = {"train": [cs for cs in every if cs not in self.held_out],
                       "test": [cs for cs in every if cs in self.held_out]}

    def scene(self, index, split="train"):
        if split not in self.combos:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        rng = random.Random(f"{self.seed}/{split}/{index}")
        n = rng.randint(1, self.max_shapes)
        slots = rng.sample(range(3), n) if n > 1 else [None]  # left / middle / right thirds
        shapes = []
        for slot in slots:
            color, kind = rng.choice(self.combos[split])
            size = rng.uniform(0.12, 0.2) if n > 1 else rng.uniform(0.15, 0.3)
            lo, hi = ((slot / 3 + size, (slot + 1) / 3 - size) if slot is not None else (size, 1 - size))
            cx = rng.uniform(lo, max(lo, hi))
            cy = rng.uniform(size, 1 - size)
            shapes.append(Shape(kind, color, cx, cy, size))
        return Scene(render(shapes, self.image_size), shapes, caption_for(shapes), questions_for(shapes),
                     index, split)

    def scenes(self, count, split="train", start=0):
        return [self.scene(i, split) for i in range(start, start + count)]

    def class_names(self):
        """Every "colour shape" name, in a fixed order: the labels of zero-shot classification."""
        return [f"{c} {s}" for c in COLORS for s in SHAPES]


def moving_shape_frames(num_frames, image_size=112, kind="circle", color="red", size=0.15):
    """A tiny synthetic video: one shape sliding left to right across num_frames frames, as a
    (frames, H, W, 3) uint8 array — what a video processor takes (notebooks/09_qwen2_vl.ipynb)."""
    import numpy as np
    xs = [size + (1 - 2 * size) * i / max(num_frames - 1, 1) for i in range(num_frames)]
    return np.stack([np.asarray(render([Shape(kind, color, x, 0.5, size)], image_size)) for x in xs])
