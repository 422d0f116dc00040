"""SOLOv2 meta-architecture: heads, targets, losses, Matrix NMS, inference, evaluation, wNLB."""

import copy
import itertools
import logging
import math

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import COCOEvaluator, inference_on_dataset
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances, PolygonMasks
from detectron2.utils.events import EventStorage

import wnlb_d2
from wnlb_d2 import WNLBCheckpointer
from wnlb_d2.data.demo_dataset import mask_to_polygons, render_scene
from wnlb_d2.modeling.meta_arch import matrix_nms
from wnlb_d2.modeling.meta_arch.losses import dice_loss
from wnlb_d2.modeling.meta_arch.postprocess import masks_to_boxes
from wnlb_d2.modeling.meta_arch.solov2_targets import assign_level_targets, build_targets, center_of_mass

pytestmark = pytest.mark.usefixtures("one_thread")

DEMO = "configs/demo/SOLOv2-Demo-R18-FPN.yaml"
SIZE = 64


def tiny_cfg(**solov2):
    """The demo SOLOv2 config shrunk for 64 px test images (R18, FPN 64, small grids)."""
    cfg = get_cfg()
    wnlb_d2.add_wnlb_config(cfg)
    wnlb_d2.merge_from_file(cfg, DEMO)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.SOLOV2.NUM_CLASSES = 3
    cfg.MODEL.SOLOV2.NUM_GRIDS = [12, 10, 8, 6, 4]
    cfg.MODEL.SOLOV2.FPN_SCALE_RANGES = [[1, 16], [8, 32], [16, 48], [32, 80], [64, 256]]
    cfg.MODEL.SOLOV2.INSTANCE_CHANNELS = 32
    cfg.MODEL.SOLOV2.MASK_CHANNELS = 32
    cfg.MODEL.SOLOV2.NUM_KERNELS = 32
    cfg.MODEL.WNLB.STAGES = ["res3", "res4", "res5"]
    for k, v in solov2.items():
        cfg.MODEL.SOLOV2[k] = v
    return cfg


def scene_input(seed, size=SIZE, polygons=True):
    """A demo-like training input: rendered shapes (classes folded to 3), polygon or bit masks."""
    rng = np.random.default_rng(seed)
    image, objects = render_scene(rng, size)
    inst = Instances((size, size))
    masks = [m for _, m in objects]
    inst.gt_classes = torch.tensor([c % 3 for c, _ in objects])
    inst.gt_boxes = Boxes(masks_to_boxes(torch.from_numpy(np.stack(masks))))
    if polygons:
        inst.gt_masks = PolygonMasks([mask_to_polygons(m) for m in masks])
    else:
        inst.gt_masks = BitMasks(torch.from_numpy(np.stack(masks)))
    img = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()  # BGR, as the model expects
    return {"image": img, "instances": inst, "height": size, "width": size}


def empty_input(size=SIZE):
    inst = Instances((size, size))
    inst.gt_classes = torch.zeros(0, dtype=torch.long)
    inst.gt_boxes = Boxes(torch.zeros(0, 4))
    inst.gt_masks = PolygonMasks([])
    return {"image": torch.rand(3, size, size) * 255, "instances": inst}


# ---------------------------------------------------------------- Matrix NMS


def matrix_nms_loop(masks, labels, scores, kernel, sigma):
    """Direct O(n^2) Matrix NMS, one pair at a time, from the SOLOv2 paper's definition."""
    n = len(scores)
    flat = masks.reshape(n, -1).double()
    iou = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(n):
            inter = float((flat[i] * flat[j]).sum())
            union = float(flat[i].sum() + flat[j].sum()) - inter
            iou[i][j] = inter / max(union, 1.0)
    f = (lambda x: math.exp(-sigma * x * x)) if kernel == "gaussian" else (lambda x: 1 - x)
    out = []
    for j in range(n):
        decay = 1.0
        for i in range(j):
            if labels[i] != labels[j]:
                continue
            comp = max([iou[k][i] for k in range(i) if labels[k] == labels[i]], default=0.0)
            # A mask i identical to a better one (comp 1) would divide by 0 with the linear
            # kernel: both implementations floor the denominator at 1e-6.
            decay = min(decay, f(iou[i][j]) / max(f(comp), 1e-6))
        out.append(float(scores[j]) * decay)
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("kernel", ["gaussian", "linear"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matrix_nms_equals_direct_loop(kernel, seed):
    g = torch.Generator().manual_seed(seed)
    n = 25
    # Overlapping rectangles so that IoUs span (0, 1), plus some identical and empty masks.
    masks = torch.zeros(n, 20, 20, dtype=torch.bool)
    for k in range(n):
        y0, x0 = torch.randint(0, 12, (2,), generator=g).tolist()
        h, w = torch.randint(3, 9, (2,), generator=g).tolist()
        masks[k, y0:y0 + h, x0:x0 + w] = True
    masks[5] = masks[2]
    masks[7] = False
    labels = torch.randint(0, 3, (n,), generator=g)
    scores = torch.rand(n, generator=g).sort(descending=True).values
    got = matrix_nms(masks, labels, scores, kernel=kernel, sigma=2.0)
    expected = matrix_nms_loop(masks, labels.tolist(), scores, kernel, 2.0)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)
    assert (got <= scores + 1e-7).all()
    assert got[0] == scores[0]  # the best mask is never suppressed
    assert got[5] < scores[5] or labels[5] != labels[2]  # a duplicate of a better mask decays


def test_matrix_nms_bad_input():
    with pytest.raises(ValueError, match="kernel"):
        matrix_nms(torch.zeros(2, 4, 4), torch.zeros(2), torch.ones(2), kernel="box")
    with pytest.raises(ValueError, match="one label and one score"):
        matrix_nms(torch.zeros(2, 4, 4), torch.zeros(3), torch.ones(2))
    assert matrix_nms(torch.zeros(0, 4, 4), torch.zeros(0), torch.zeros(0)).shape == (0,)


# ---------------------------------------------------------------- targets


def _inst(boxes, masks, classes, size=(64, 64)):
    inst = Instances(size)
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    inst.gt_classes = torch.tensor(classes)
    inst.gt_masks = BitMasks(masks)
    return inst


def _box_mask(boxes, size=(64, 64)):
    m = torch.zeros(len(boxes), *size, dtype=torch.bool)
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        m[k, y0:y1, x0:x1] = True
    return m


def _cells(targets, image, offset, s):
    """Positive (row, col) cells of one level of one image, and their labels."""
    lab = targets.labels[image, offset:offset + s * s]
    idx = (lab < 3).nonzero().flatten().tolist()
    return {(i // s, i % s): int(lab[i]) for i in idx}


def test_targets_grid_cell_scale_range_and_centre_region():
    # Square 32 px box centred at (32, 32) on a 64 px image: scale 32.
    boxes = [(16, 16, 48, 48)]
    inst = _inst(boxes, _box_mask(boxes), [2])
    t = build_targets([inst], (64, 64), (16, 16), num_grids=[8, 4, 2], scale_ranges=[(1, 40), (30, 200), (40, 50)],
                      sigma=0.2, num_classes=3)
    # Level 0, S=8 (8 px cells): centre region 32 +- 3.2 spans cells 3..4 on both axes.
    assert _cells(t, 0, 0, 8) == {(3, 3): 2, (3, 4): 2, (4, 3): 2, (4, 4): 2}
    # Level 1, S=4 (16 px cells): 28.8..35.2 spans cells 1..2.
    assert _cells(t, 0, 64, 4) == {(1, 1): 2, (1, 2): 2, (2, 1): 2, (2, 2): 2}
    # Level 2: scale 32 is outside (40, 50): nothing.
    assert _cells(t, 0, 80, 2) == {}
    assert t.num_pos == 8
    # Each positive's mask target is the instance's mask at the mask-feature resolution.
    expected = torch.zeros(16, 16)
    expected[4:12, 4:12] = 1
    for m in t.pos_masks:
        assert torch.equal(m, expected)

    # Off the diagonal, second image of a batch: rows follow y, columns x (row-major cells).
    boxes = [(40, 8, 56, 24)]  # centre (48, 16), scale 16: level 0 only
    t = build_targets([inst, _inst(boxes, _box_mask(boxes), [1])], (64, 64), (16, 16), num_grids=[8, 4, 2],
                      scale_ranges=[(1, 40), (30, 200), (40, 50)], sigma=0.2, num_classes=3)
    assert _cells(t, 1, 0, 8) == {(1, 5): 1, (1, 6): 1, (2, 5): 1, (2, 6): 1}
    assert _cells(t, 1, 64, 4) == {} and t.num_pos == 12
    assert t.pos_image.tolist() == [0] * 8 + [1] * 4


def test_targets_centre_of_mass_and_three_by_three_limit():
    # An L-shaped mask: its centre of mass is not the box centre.
    mask = torch.zeros(1, 64, 64, dtype=torch.bool)
    mask[0, 0:64, 0:16] = True
    mask[0, 48:64, 16:64] = True
    cx, cy = center_of_mass(mask)
    area = 64 * 16 + 48 * 16
    assert math.isclose(cx.item(), (64 * 16 * 8 + 48 * 16 * 40) / area, rel_tol=1e-6)
    assert math.isclose(cy.item(), (64 * 16 * 32 + 48 * 16 * 56) / area, rel_tol=1e-6)
    # sigma 1.0: the centre region is the whole box (8 x 8 cells), clipped to 3 x 3 around the centre cell.
    cells = assign_level_targets(torch.tensor([[0.0, 0.0, 64.0, 64.0]]), torch.stack([cx, cy], 1), (64, 64), 8, 1.0)
    row, col = int(cy.item() / 8), int(cx.item() / 8)
    assert (row, col) == (5, 2)
    assert sorted(cells[0]) == sorted(r * 8 + c for r in range(4, 7) for c in range(1, 4))


def test_targets_smaller_instance_wins_shared_cells_and_empty_masks_are_skipped():
    boxes = [(8, 8, 56, 56), (26, 26, 38, 38), (0, 0, 10, 10)]
    masks = _box_mask(boxes)
    masks[2] = False  # cropped away: nothing to learn
    inst = _inst(boxes, masks, [0, 1, 2])
    t = build_targets([inst], (64, 64), (16, 16), num_grids=[4], scale_ranges=[(1, 100)], sigma=0.2, num_classes=3)
    cells = _cells(t, 0, 0, 4)
    # Both centres at (32, 32): the small box (class 1) owns the shared cells.
    assert set(cells.values()) == {1}
    assert set(cells) == {(1, 1), (1, 2), (2, 1), (2, 2)}


def test_polygon_and_bitmask_annotations_give_the_same_targets():
    a, b = scene_input(3, polygons=True), scene_input(3, polygons=False)
    kw = dict(num_grids=[12, 8], scale_ranges=[(1, 30), (20, 200)], sigma=0.2, num_classes=3)
    ta = build_targets([a["instances"]], (64, 64), (16, 16), **kw)
    tb = build_targets([b["instances"]], (64, 64), (16, 16), **kw)
    assert ta.num_pos > 0
    assert torch.equal(ta.labels, tb.labels)
    assert torch.equal(ta.pos_cell, tb.pos_cell)
    torch.testing.assert_close(ta.pos_masks, tb.pos_masks)


def test_dice_loss_and_masks_to_boxes():
    t = torch.zeros(3, 8, 8)
    t[:, 2:6, 2:6] = 1
    p = torch.zeros(3, 8, 8)
    p[0] = t[0]
    p[1, 6:, 6:] = 1
    p[2] = 0.5
    loss = dice_loss(p, t)
    assert loss[0] < 1e-3 and abs(loss[1] - 1) < 1e-3
    q, r = p[2].flatten(), t[2].flatten()
    assert math.isclose(loss[2].item(), 1 - 2 * (q * r).sum().item() / ((q * q).sum().item() + (r * r).sum().item() + 2e-3), rel_tol=1e-5)
    with pytest.raises(ValueError, match="differ"):
        dice_loss(p, t[:2])
    m = torch.rand(6, 10, 12) > 0.7
    m[2] = False
    assert torch.equal(masks_to_boxes(m), BitMasks(m).get_bounding_boxes().tensor)


# ---------------------------------------------------------------- model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(tiny_cfg())


def test_output_shapes_and_losses(model):
    model.train()
    inputs = [scene_input(0), scene_input(1, polygons=False)]
    images = model.preprocess_image(inputs)
    feats = model.backbone(images.tensor)
    cate, kernels = model.instance_head([feats[f] for f in model.in_features])
    assert [tuple(c.shape) for c in cate] == [(2, 3, s, s) for s in (12, 10, 8, 6, 4)]
    assert [tuple(k.shape) for k in kernels] == [(2, 32, s, s) for s in (12, 10, 8, 6, 4)]
    mask_feats = model.mask_head([feats[f] for f in model.mask_in_features])
    assert tuple(mask_feats.shape) == (2, 32, SIZE // 4, SIZE // 4)
    # Focal-loss prior: every cell starts at probability 0.01.
    torch.testing.assert_close(torch.sigmoid(model.instance_head.cate_pred.bias), torch.full((3,), 0.01))
    with EventStorage():
        losses = model(inputs)
    assert set(losses) == {"loss_cate", "loss_mask"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    # Dice loss of near-0.5 masks against small objects: well above 0, at most its weight.
    assert 0.17 * model.dice_weight < losses["loss_mask"].item() <= model.dice_weight


def test_image_without_annotations_and_batch_without_positives_train(model):
    model.train()
    for batch in ([empty_input(), scene_input(2)], [empty_input(), empty_input()]):
        model.zero_grad()
        with EventStorage():
            losses = model(batch)
        assert all(torch.isfinite(v) for v in losses.values())
        sum(losses.values()).backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
    # No positive at all: the mask loss is exactly 0, the category loss still teaches background.
    assert losses["loss_mask"].item() == 0.0 and losses["loss_cate"].item() > 0
    assert model.instance_head.cate_pred.bias.grad.abs().sum() > 0
    # An instance outside every scale range is no positive either, and trains the same way.
    far = scene_input(4)
    cfg = tiny_cfg(FPN_SCALE_RANGES=[[1000, 2000]] * 5)
    m = build_model(cfg)
    with EventStorage():
        out = m([far])
    assert out["loss_mask"].item() == 0.0
    sum(out.values()).backward()


@pytest.fixture(scope="module")
def trained():
    """The tiny model after 12 AdamW iterations on 4 demo-like images (2 polygon, 2 bitmask)."""
    torch.manual_seed(1)
    m = build_model(tiny_cfg())
    m.train()
    batch = [scene_input(s, polygons=s % 2 == 0) for s in range(4)]
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    history = []
    with EventStorage():
        for it in range(12):
            for g in opt.param_groups:
                # Warm-up: AdamW's first steps move every weight by about lr in a coherent
                # direction, which saturates the dynamic-kernel masks without it.
                g["lr"] = 3e-3 * min(1.0, (it + 1) / 8)
            losses = m(batch)
            opt.zero_grad()
            sum(losses.values()).backward()
            opt.step()
            history.append({k: v.item() for k, v in losses.items()})
    return m.eval(), batch, history


def test_training_iterations_reduce_the_loss(trained):
    _, _, history = trained
    first, last = history[0], history[-1]
    assert last["loss_cate"] < 0.5 * first["loss_cate"], history
    assert last["loss_mask"] < 0.5 * first["loss_mask"], history


def _register(name, inputs):
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    dicts = []
    for k, x in enumerate(inputs):
        inst = x["instances"]
        if isinstance(inst.gt_masks, PolygonMasks):
            polys = [[p.tolist() for p in poly] for poly in inst.gt_masks.polygons]
        else:
            polys = [mask_to_polygons(m.numpy()) for m in inst.gt_masks.tensor]
        anns = [{"bbox": b, "bbox_mode": 0, "category_id": int(c), "segmentation": poly, "iscrowd": 0}
                for b, c, poly in zip(inst.gt_boxes.tensor.tolist(), inst.gt_classes, polys)]
        dicts.append({"file_name": f"{k}.png", "image_id": k, "height": SIZE, "width": SIZE, "annotations": anns})
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(thing_classes=["a", "b", "c"])


def test_inference_and_coco_evaluation(trained, tmp_path):
    m, batch, _ = trained
    # Output at a requested size other than the input's, like detector_postprocess.
    with torch.no_grad():
        out = m([{"image": batch[0]["image"], "height": 2 * SIZE, "width": 3 * SIZE}])[0]["instances"]
    assert out.image_size == (2 * SIZE, 3 * SIZE)
    assert out.pred_masks.shape[1:] == (2 * SIZE, 3 * SIZE) and out.pred_masks.dtype == torch.bool
    assert len(out) > 0 and len(out) <= 100
    assert (out.scores[:-1] >= out.scores[1:]).all()
    assert torch.equal(out.pred_boxes.tensor, masks_to_boxes(out.pred_masks))
    # The same instances as at the input's own size, only resized.
    with torch.no_grad():
        native = m([{"image": batch[0]["image"]}])[0]["instances"]
    assert native.image_size == (SIZE, SIZE) and torch.equal(native.scores, out.scores)
    up = torch.nn.functional.interpolate(native.pred_masks[None].float(), size=(2 * SIZE, 3 * SIZE))[0] > 0.5
    inter = (up & out.pred_masks).flatten(1).sum(1).float()
    union = (up | out.pred_masks).flatten(1).sum(1).float()
    assert (inter / union.clamp(min=1) > 0.8).all()

    _register("solov2_test_eval", batch)
    loader = [[{"image": x["image"], "image_id": k, "height": SIZE, "width": SIZE}] for k, x in enumerate(batch)]
    evaluator = COCOEvaluator("solov2_test_eval", tasks=("bbox", "segm"), distributed=False,
                              output_dir=str(tmp_path), use_fast_impl=False)
    res = inference_on_dataset(m, loader, evaluator)
    assert set(res) == {"bbox", "segm"}
    # Measured: 58 segm / 63 bbox AP after 10 iterations, 72 / 83 after 20.
    assert res["segm"]["AP"] > 30 and res["bbox"]["AP"] > 30, res


def test_empty_predictions_are_valid_instances(tmp_path):
    cfg = tiny_cfg(SCORE_THRESH_TEST=1.0)
    m = build_model(cfg).eval()
    with torch.no_grad():
        out = m([{"image": torch.rand(3, 50, 60) * 255, "height": 100, "width": 120}])[0]["instances"]
    assert len(out) == 0 and out.image_size == (100, 120)
    assert out.pred_masks.shape == (0, 100, 120) and out.pred_boxes.tensor.shape == (0, 4)
    assert out.scores.shape == (0,) and out.pred_classes.dtype == torch.long
    from detectron2.evaluation.coco_evaluation import instances_to_coco_json

    assert instances_to_coco_json(out, 0) == []


def test_bad_config_and_input_raise_clear_errors():
    cfg = tiny_cfg()
    cfg.MODEL.MASK_ON = False
    with pytest.raises(ValueError, match="MASK_ON"):
        build_model(cfg)
    with pytest.raises(ValueError, match="p7"):
        build_model(tiny_cfg(IN_FEATURES=["p3", "p4", "p5", "p6", "p7"]))
    with pytest.raises(ValueError, match="NUM_GRIDS"):
        build_model(tiny_cfg(NUM_GRIDS=[8, 6, 4]))
    with pytest.raises(ValueError, match="NMS_KERNEL"):
        build_model(tiny_cfg(NMS_KERNEL="hard"))
    with pytest.raises(ValueError, match="INSTANCE_CHANNELS"):
        build_model(tiny_cfg(INSTANCE_CHANNELS=40))
    m = build_model(tiny_cfg()).train()
    x = scene_input(0)
    x["instances"].remove("gt_masks")
    with pytest.raises(ValueError, match="gt_masks"):
        m([x])


# ---------------------------------------------------------------- wNLB


def test_wnlb_solov2_equals_stock_after_loading_stock_checkpoint(tmp_path, caplog):
    torch.manual_seed(0)
    cfg = tiny_cfg(SCORE_THRESH_TEST=0.0, UPDATE_THRESH_TEST=0.0)  # random heads score about 0.01: keep all
    stock = build_model(cfg).eval()
    DetectionCheckpointer(stock, save_dir=str(tmp_path)).save("stock")
    wcfg = cfg.clone()
    wcfg.MODEL.BACKBONE.NAME = "build_resnet_wnlb_fpn_backbone"
    wcfg.MODEL.WNLB.STAGES = ["res2", "res3", "res4", "res5"]
    torch.manual_seed(123)  # other initial weights: everything but the blocks must come from the file
    wnlb = build_model(wcfg).eval()
    assert len(wnlb.backbone.bottom_up.wnlb) == 4
    with caplog.at_level(logging.INFO, logger="wnlb_d2.checkpoint"):
        WNLBCheckpointer(wnlb).load(str(tmp_path / "stock.pth"))
    line = [r.getMessage() for r in caplog.records if r.name == "wnlb_d2.checkpoint"]
    assert len(line) == 1 and "every checkpoint tensor was used" in line[0], line
    x = scene_input(5)
    inputs = [{"image": x["image"], "height": 80, "width": 90}]
    with torch.no_grad():
        a, b = stock(inputs)[0]["instances"], wnlb(inputs)[0]["instances"]
    assert len(a) > 0 and len(a) == len(b)
    for field in ("pred_masks", "scores", "pred_classes"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert torch.equal(a.pred_boxes.tensor, b.pred_boxes.tensor)


def test_shipped_configs_one_key_apart_and_build():
    def load(path):
        cfg = get_cfg()
        wnlb_d2.add_wnlb_config(cfg)
        wnlb_d2.merge_from_file(cfg, path)
        return cfg

    base = "configs/COCO-InstanceSegmentation/solov2_R_50_FPN_3x"
    stock, wnlb = load(base + ".yaml"), load(base + "_wnlb.yaml")
    assert stock.MODEL.META_ARCHITECTURE == "SOLOv2" and stock.MODEL.MASK_ON
    assert stock.MODEL.BACKBONE.NAME == "build_resnet_fpn_backbone"
    wnlb.MODEL.BACKBONE.NAME = stock.MODEL.BACKBONE.NAME
    assert wnlb == stock
    assert (stock.SOLVER.MAX_ITER, stock.SOLVER.STEPS) == (270000, (210000, 250000))
    c = stock.MODEL.SOLOV2
    assert list(c.NUM_GRIDS) == [40, 36, 24, 16, 12] and c.INSTANCE_CHANNELS == 512 and c.NUM_KERNELS == 256
    demo = load(DEMO)
    assert demo.MODEL.META_ARCHITECTURE == "SOLOv2" and demo.MODEL.SOLOV2.NUM_CLASSES == 6
    demo.MODEL.DEVICE = "cpu"
    demo.MODEL.BACKBONE.NAME = "build_resnet_wnlb_fpn_backbone"
    m = build_model(demo)
    assert sorted(m.backbone.bottom_up.wnlb) == ["res2", "res3", "res4", "res5"]


def test_conv_init_normal_or_kaiming():
    """MODEL.SOLOV2.CONV_INIT: the paper's std 0.01, or He-scaled weights where a norm follows."""
    torch.manual_seed(0)
    normal = build_model(tiny_cfg(INSTANCE_CHANNELS=64, CONV_INIT="normal"))
    torch.manual_seed(0)
    kaiming = build_model(tiny_cfg(INSTANCE_CHANNELS=64, CONV_INIT="kaiming"))
    tower = "instance_head.cate_tower.1.weight"  # 64 -> 64, 3x3, GN after it
    n, k = normal.state_dict()[tower], kaiming.state_dict()[tower]
    assert float(n.std()) == pytest.approx(0.01, rel=0.05)
    assert float(k.std()) == pytest.approx((2.0 / (64 * 9)) ** 0.5, rel=0.05)  # fan-out = 64 x 3 x 3
    for name in ("instance_head.cate_pred.weight", "instance_head.kernel_pred.weight"):  # no norm after them
        assert float(kaiming.state_dict()[name].std()) == pytest.approx(0.01, rel=0.1)
    prior = -math.log((1 - 0.01) / 0.01)
    assert torch.allclose(kaiming.instance_head.cate_pred.bias, torch.full((3,), prior))
    with pytest.raises(ValueError, match="CONV_INIT"):
        build_model(tiny_cfg(CONV_INIT="xavier"))


# ---------------------------------------------------------------- issue 20


def test_ground_truth_class_beyond_num_classes_is_an_error(model):
    """A dataset with more classes than MODEL.SOLOV2.NUM_CLASSES (3 here): the objects of class 3
    used to become background silently."""
    x = scene_input(0)
    x["instances"].gt_classes[0] = 3
    with pytest.raises(ValueError, match=r"Ground-truth class 3 is out of range for MODEL.SOLOV2.NUM_CLASSES = 3"):
        model.train()([x])
