"""The synthetic shapes world: deterministic, held-out combinations really held out, pixels drawn."""
import numpy as np
import pytest

from minivlm.data.shapes import COLORS, DEFAULT_HELD_OUT, SHAPES, ShapesWorld


def test_same_index_same_scene_and_splits_differ():
    w = ShapesWorld(32, max_shapes=2)
    a, b = w.scene(5), w.scene(5)
    assert a.caption == b.caption and np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert [w.scene(i).caption for i in range(20)] != [w.scene(i, "test").caption for i in range(20)]


def test_held_out_combinations_never_in_train_only_in_test():
    w = ShapesWorld(32, max_shapes=3)
    train = {(s.color, s.kind) for i in range(400) for s in w.scene(i).shapes}
    test = {(s.color, s.kind) for i in range(200) for s in w.scene(i, "test").shapes}
    assert not train & set(DEFAULT_HELD_OUT)
    assert test == set(DEFAULT_HELD_OUT)
    # every colour and every shape word is still seen in training
    assert {c for c, _ in train} == set(COLORS) and {k for _, k in train} == set(SHAPES)


def test_shape_is_drawn_in_its_colour_at_its_centre():
    w = ShapesWorld(64)
    for i in range(10):
        scene = w.scene(i)
        s = scene.shapes[0]
        # the centre pixel of a single shape carries its colour
        pixel = scene.image.getpixel((int(s.cx * 64), int(s.cy * 64 + s.size * 64 * 0.3)))
        assert pixel == COLORS[s.color], (scene.caption, pixel)


def test_questions_have_the_right_answers():
    w = ShapesWorld(32)
    for i in range(20):
        scene = w.scene(i)
        s = scene.shapes[0]
        qa = dict(scene.questions)
        assert qa[f"what color is the {s.kind}?"] == s.color
        assert qa[f"what shape is {s.color}?"] == s.kind
        assert qa["how many shapes are there?"] == "one"
        assert s.color in scene.caption and s.kind in scene.caption


def test_bad_arguments():
    with pytest.raises(ValueError, match="image_size"):
        ShapesWorld(4)
    with pytest.raises(ValueError, match="split"):
        ShapesWorld(32).scene(0, "val")
