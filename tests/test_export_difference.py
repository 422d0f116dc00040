"""How the export check measures exported against eager (wnlb_d2.export.output_differences): box
coordinates as a fraction of the image's longer side; SOLOv2's boxes against what its mask
probabilities allow, so a pixel at the mask threshold that flips in another runtime is no
difference, and a box that no such pixel explains still is."""

import numpy as np
import pytest
import torch

from wnlb_d2.export import max_difference, output_differences
from wnlb_d2.modeling.meta_arch.postprocess import masks_to_boxes

THRESH = 0.5
SHAPE = (60, 80)  # (H, W): the longer side is 80
SIDE = 80.0


def _rcnn(boxes, scores=(0.9, 0.4)):
    """Mask R-CNN-like flat outputs: two detections, 28 x 28 mask probabilities."""
    masks = np.linspace(0, 1, 2 * 28 * 28, dtype=np.float32).reshape(2, 28, 28)
    return [np.asarray(boxes, np.float32), np.asarray(scores, np.float32), np.array([1, 3]), masks]


def test_mask_rcnn_boxes_count_as_a_fraction_of_the_longer_side():
    boxes = [[1000.0, 20.0, 1200.5, 640.25], [3.0, 4.0, 60.0, 61.0]]
    expected = _rcnn(boxes)
    got = _rcnn(np.asarray(boxes) + [[1.2e-4, 0, 0, -6e-5], [0, 0, 3.6e-4, 0]])  # float error at 1333 px
    diffs = output_differences(expected, got, (800, 1333))
    assert diffs["boxes"] == pytest.approx(3.6e-4 / 1333, rel=1e-2)  # the largest, over the longer side
    assert max_difference(expected, got, (800, 1333)) <= 1e-4  # an absolute 1e-4 px refused it
    # A real shift is still refused: 0.2 px on a 1333-px image, 1.5e-4 of the side.
    shifted = _rcnn(np.asarray(boxes) + [[0, 0, 0, 0.2], [0, 0, 0, 0]])
    assert max_difference(expected, shifted, (800, 1333)) == pytest.approx(0.2 / 1333, rel=1e-3)
    assert max_difference(expected, shifted, (800, 1333)) > 1e-4
    # Scores, classes and masks count as they are (not over the side).
    other = _rcnn(boxes, scores=(0.9, 0.4002))
    assert output_differences(expected, other, (800, 1333))["scores"] == pytest.approx(2e-4, rel=1e-3)


def test_shape_count_and_non_finite_differences_are_inf():
    expected = _rcnn([[0, 0, 5, 5], [1, 1, 4, 4]])
    one = [x[:1] for x in expected]  # one detection fewer
    assert max_difference(expected, one, SHAPE) == float("inf")
    nan = [x.copy() for x in expected]
    nan[1][0] = np.nan
    assert max_difference(expected, nan, SHAPE) == float("inf")
    assert max_difference(expected, expected[:3], SHAPE) == float("inf")  # an output missing
    empty = [x[:0] for x in expected]
    assert output_differences(empty, empty, SHAPE) == {"boxes": 0.0, "scores": 0.0, "classes": 0.0, "masks": 0.0}


def _blob(probs, y0, y1, x0, x1, value=0.9):
    probs[y0:y1, x0:x1] = value
    return probs


def _solov2(probs, boxes=None, scores=None):
    """SOLOv2-like flat outputs: boxes of ``probs > THRESH`` unless given, as the model computes them."""
    probs = np.asarray(probs, np.float32)
    if boxes is None:
        boxes = masks_to_boxes(torch.from_numpy(probs > THRESH)).numpy()
    n = len(probs)
    scores = np.linspace(0.9, 0.5, n, dtype=np.float32) if scores is None else scores
    return [np.asarray(boxes, np.float32), scores, np.arange(n), probs]


def _eager_masks():
    """Three masks: a blob whose right column is at the threshold (+3e-7), a blob with a lone pixel
    far from it at the threshold, and a mask whose every pixel is at the threshold (eager: one pixel)."""
    probs = np.full((3, *SHAPE), 0.1, np.float32)
    _blob(probs[0], 10, 20, 5, 15)
    probs[0, 10:20, 15] = THRESH + 3e-7  # the right edge column, in the mask by a hair
    _blob(probs[1], 30, 40, 30, 40)
    probs[1, 55, 75] = THRESH - 2e-7  # a lone pixel far off, out of the mask by a hair
    probs[2, 0:5, 0:5] = THRESH - 1e-7
    probs[2, 2, 3] = THRESH + 1e-7
    return probs


def test_solov2_box_moved_by_a_pixel_at_the_threshold_is_no_difference():
    probs = _eager_masks()
    expected = _solov2(probs)
    # Another runtime: each pixel at the threshold moves by up to 5e-7 and falls on the other side.
    flipped = probs.copy()
    flipped[0, 10:20, 15] = THRESH - 2e-7  # the right column leaves: x1 16 -> 15
    flipped[1, 55, 75] = THRESH + 3e-7  # the lone pixel joins: the box grows to (30, 30, 76, 56)
    flipped[2, 2, 3] = THRESH - 1e-7  # the one pixel leaves: an empty mask, a zero box
    got = _solov2(flipped)
    assert ((got[3] > THRESH) != (expected[3] > THRESH)).sum() == 10 + 1 + 1  # binary masks differ
    assert got[0].tolist() == [[5, 10, 15, 20], [30, 30, 76, 56], [0, 0, 0, 0]]
    assert expected[0].tolist() == [[5, 10, 16, 20], [30, 30, 40, 40], [3, 2, 4, 3]]
    diffs = output_differences(expected, got, SHAPE, THRESH)
    assert diffs["boxes"] == 0.0
    assert diffs["masks"] == pytest.approx(5e-7, rel=0.1)
    assert max_difference(expected, got, SHAPE, THRESH) <= 1e-4
    # Without the mask threshold the boxes would count as they are: 36 px of 80.
    assert output_differences(expected, got, SHAPE)["boxes"] == pytest.approx(36 / SIDE)


def test_solov2_box_that_no_pixel_at_the_threshold_explains_is_refused():
    probs = _eager_masks()
    expected = _solov2(probs)
    for i, coord, delta in [(0, 0, 1), (0, 2, -2), (1, 1, -1), (1, 3, 1), (0, 2, 1)]:
        boxes = expected[0].copy()
        boxes[i, coord] += delta  # moved where every pixel is far from the threshold (0.1 or 0.9)
        got = _solov2(probs, boxes=boxes)
        assert output_differences(expected, got, SHAPE, THRESH)["boxes"] == pytest.approx(abs(delta) / SIDE), \
            (i, coord, delta)
    # An empty box for a mask well inside, and a box for a mask that cannot have one.
    boxes = expected[0].copy()
    boxes[1] = 0
    assert max_difference(expected, _solov2(probs, boxes=boxes), SHAPE, THRESH) == pytest.approx(40 / SIDE)
    empty = probs.copy()
    empty[2] = 0.1  # no pixel anywhere near the threshold
    boxes = masks_to_boxes(torch.from_numpy(empty > THRESH)).numpy()
    boxes[2] = [1, 1, 2, 2]
    assert max_difference(_solov2(empty), _solov2(empty, boxes=boxes), SHAPE, THRESH) == pytest.approx(2 / SIDE)


def test_solov2_boxes_allowance_is_the_measured_mask_difference():
    # A mask 2e-3 off (beyond the tolerance) allows the box of a pixel 2e-3 from the threshold,
    # but the masks' own difference already refuses it; with the masks equal, none is allowed.
    probs = _eager_masks()
    probs[0, 10:20, 15] = THRESH + 1e-3
    expected = _solov2(probs)
    moved = probs.copy()
    moved[0, 10:20, 15] = THRESH - 1e-3
    got = _solov2(moved)
    diffs = output_differences(expected, got, SHAPE, THRESH)
    assert diffs["boxes"] == 0.0 and diffs["masks"] == pytest.approx(2e-3, rel=1e-3)
    assert max_difference(expected, got, SHAPE, THRESH) > 1e-4
    same_masks = _solov2(probs, boxes=got[0])
    assert output_differences(expected, same_masks, SHAPE, THRESH)["boxes"] == pytest.approx(1 / SIDE)


def test_solov2_exact_boxes_of_random_masks_are_no_difference_and_any_shift_is():
    # The bracket's own boxes agree with masks_to_boxes on masks of every shape, empty ones too.
    g = np.random.default_rng(0)
    probs = g.random((12, 9, 13)).astype(np.float32) ** np.geomspace(0.3, 1000, 12)[:, None, None].astype(np.float32)
    expected = _solov2(probs)
    assert (expected[0] == 0).all(axis=1).any() and not (expected[0] == 0).all()
    assert output_differences(expected, _solov2(probs), (9, 13), THRESH)["boxes"] == 0.0
    for i in range(len(probs)):
        boxes = expected[0].copy()
        boxes[i, i % 4] += 1
        assert output_differences(expected, _solov2(probs, boxes=boxes), (9, 13), THRESH)["boxes"] > 0, i
