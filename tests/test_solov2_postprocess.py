"""SOLOv2's tensor-only inference (the traced / exported path) gives the eager path's instances."""

import warnings

import pytest
import torch
import torch.nn.functional as F

from wnlb_d2.modeling.meta_arch.postprocess import (
    masks_to_boxes, solov2_inference_single_image, solov2_inference_single_image_padded,
)

pytestmark = pytest.mark.usefixtures("one_thread")

GRIDS, STRIDES = (6, 4, 3), (8, 16, 32)
NUM_CLASSES, EMBED = 3, 8


def _head_outputs(seed, feat_size=(10, 12), density=0.3):
    """Random point-NMS-like category scores (most cells zero), kernels and smooth mask features.

    The features are smooth (up-sampled noise) so masks are blobs that overlap one another
    (Matrix NMS has something to decay), of every size (the stride filter drops some).
    """
    g = torch.Generator().manual_seed(seed)
    m = sum(s * s for s in GRIDS)
    cate = torch.rand(m, NUM_CLASSES, generator=g) * (torch.rand(m, NUM_CLASSES, generator=g) < density)
    kernels = torch.randn(m, EMBED, generator=g)
    coarse = torch.randn(1, EMBED, 3, 4, generator=g) * 3
    feats = F.interpolate(coarse, size=feat_size, mode="bilinear", align_corners=False)[0]
    strides = torch.cat([torch.full((s * s,), float(st)) for s, st in zip(GRIDS, STRIDES)])
    return cate, kernels, strides, feats


OPTS = [
    dict(),  # the config's defaults
    dict(nms_pre=7, max_per_image=3),  # both cut-offs bind
    dict(score_thresh=0.0, update_thresh=0.0, nms_kernel="linear", nms_sigma=1.0),
    dict(score_thresh=0.5, mask_thresh=0.3, update_thresh=0.2, nms_sigma=4.0),
    dict(score_thresh=1.0),  # no candidate
    dict(update_thresh=1.0),  # candidates, none left after Matrix NMS
]


def _assert_same_instances(expected, got):
    assert got.image_size == expected.image_size
    assert torch.equal(got.pred_classes, expected.pred_classes)
    assert torch.equal(got.pred_masks, expected.pred_masks)
    assert torch.equal(got.pred_boxes.tensor, expected.pred_boxes.tensor)
    torch.testing.assert_close(got.scores, expected.scores, rtol=0, atol=1e-6)
    assert got.has("pred_mask_probs") == expected.has("pred_mask_probs")
    if expected.has("pred_mask_probs"):
        assert got.pred_mask_probs.dtype == expected.pred_mask_probs.dtype == torch.float32
        torch.testing.assert_close(got.pred_mask_probs, expected.pred_mask_probs, rtol=0, atol=1e-6)


@pytest.mark.parametrize("opts", OPTS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_padded_inference_equals_eager(seed, opts):
    cate, kernels, strides, feats = _head_outputs(seed)
    image_size, out_size = (37, 45), (50, 41)  # padded 40 x 48 at stride 4; another output size
    args = (cate, kernels, strides, feats, image_size, out_size)
    expected = solov2_inference_single_image(*args, **opts)
    got = solov2_inference_single_image_padded(*args, **opts)
    _assert_same_instances(expected, got)
    if "score_thresh" not in opts and "update_thresh" not in opts:
        assert len(expected) > 1, "these inputs must give several detections"
    # With the probabilities (what an export returns): the same instances, and masks, boxes and
    # scores exactly as without them.
    for infer, plain in ((solov2_inference_single_image, expected), (solov2_inference_single_image_padded, got)):
        soft = infer(*args, mask_probs=True, **opts)
        assert not plain.has("pred_mask_probs")  # users' instances unchanged
        assert soft.pred_mask_probs.shape == soft.pred_masks.shape == (len(plain), *out_size)
        assert torch.equal(soft.pred_masks, soft.pred_mask_probs > opts.get("mask_thresh", 0.5))
        for field in ("pred_masks", "scores", "pred_classes"):
            assert torch.equal(soft.get(field), plain.get(field)), field
        assert torch.equal(soft.pred_boxes.tensor, plain.pred_boxes.tensor)
    _assert_same_instances(solov2_inference_single_image(*args, mask_probs=True, **opts),
                           solov2_inference_single_image_padded(*args, mask_probs=True, **opts))


def test_traced_padded_inference_equals_eager_for_other_sizes_and_counts():
    # Traced at one feature size with several detections, run at others with 0 and several.
    def run(cate, kernels, feats):
        h, w = feats.shape[1], feats.shape[2]
        res = solov2_inference_single_image_padded(cate, kernels, strides, feats, (4 * h - 3, 4 * w - 2),
                                                   (4 * h - 3, 4 * w - 2), nms_pre=20, max_per_image=8,
                                                   mask_probs=True)
        return res.pred_boxes.tensor, res.scores, res.pred_classes, res.pred_masks, res.pred_mask_probs

    cate, kernels, strides, feats = _head_outputs(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings on the constant cell count
        traced = torch.jit.trace(run, (cate, kernels, feats), check_trace=False)
    counts = []
    for seed, size, density in [(1, (7, 9), 0.3), (2, (12, 8), 0.3), (3, (9, 9), 0.0)]:
        cate, kernels, _, feats = _head_outputs(seed, size, density)
        h, w = size
        expected = solov2_inference_single_image(cate, kernels, strides, feats, (4 * h - 3, 4 * w - 2),
                                                 (4 * h - 3, 4 * w - 2), nms_pre=20, max_per_image=8,
                                                 mask_probs=True)
        boxes, scores, classes, masks, probs = traced(cate, kernels, feats)
        assert masks.shape == probs.shape == expected.pred_masks.shape
        assert torch.equal(masks, expected.pred_masks) and torch.equal(classes, expected.pred_classes)
        torch.testing.assert_close(probs, expected.pred_mask_probs, rtol=0, atol=1e-6)
        assert torch.equal(boxes, expected.pred_boxes.tensor)
        torch.testing.assert_close(scores, expected.scores, rtol=0, atol=1e-6)
        counts.append(len(expected))
    assert counts[0] > 1 and counts[1] > 1 and counts[2] == 0, counts


def test_masks_to_boxes_traced_for_any_count_and_size():
    # No branch on the count or the size: traced with 5 masks, right for 0, 1 and 3 of other sizes.
    from detectron2.structures import BitMasks

    g = torch.Generator().manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(masks_to_boxes, (torch.rand(5, 9, 11, generator=g) > 0.8,), check_trace=False)
    for n, size in [(0, (6, 7)), (1, (13, 4)), (3, (8, 8))]:
        masks = torch.rand(n, *size, generator=g) > 0.7
        if n == 3:
            masks[1] = False  # empty: a zero box
            masks[2] = False
            masks[2, 4, 6] = True  # one pixel (x 6, y 4) -> (6, 4, 7, 5)
        for boxes in (masks_to_boxes(masks), traced(masks)):
            assert boxes.shape == (n, 4) and boxes.dtype == torch.float32
            assert torch.equal(boxes, BitMasks(masks).get_bounding_boxes().tensor)
        if n == 3:
            assert boxes[1].tolist() == [0, 0, 0, 0] and boxes[2].tolist() == [6, 4, 7, 5]
