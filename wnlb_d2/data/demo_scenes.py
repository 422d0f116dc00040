"""Scenes of the embedded demo dataset: textured shapes with exact COCO polygon masks.

The class is the shape, and each class also has a hue sector (circle red, square yellow,
triangle green, star cyan, cross blue, ellipse magenta; +-25 degrees, random saturation,
brightness and texture), a colour prior like real classes have, which a low-light image's
noise and colour cast blur; objects are rotated, occlude each other, and come in COCO's three
size ranges (measured on the annotated, visible mask):

* small: area 120-900 px (COCO: < 32^2), about 30 % of the objects that are not large,
* medium: area 1,200-8,000 px (COCO: 32^2-96^2),
* large: area > 96^2 = 9,216 px (up to about 85 % of the image); in about a third of the
  images, the first (lowest) object is large and may extend past the image border.

An object is kept only where at least half of it stays visible and its visible part has no
hole, so its mask is exactly a set of COCO polygons (traced on the pixel grid; they decode
back to the same pixels with pycocotools). Annotation ``area`` is the polygon area, which is
what detectron2's COCOEvaluator computes when it converts the dataset.

:mod:`wnlb_d2.data.demo_dataset` packages these scenes into a registered dataset.
"""

import math

import cv2
import numpy as np

__all__ = ["DEMO_CLASSES", "AREA_SMALL", "AREA_LARGE", "render_scene", "mask_to_polygons", "annotation_fields"]

#: Class names; category id = index + 1.
DEMO_CLASSES = ("circle", "square", "triangle", "star", "cross", "ellipse")

#: COCO's area limits (pixels): small < AREA_SMALL <= medium < AREA_LARGE <= large.
AREA_SMALL = 32**2
AREA_LARGE = 96**2

# Area range (px) drawn for each size class; large is capped by the image size.
_SMALL_AREA = (120.0, 900.0)
_MEDIUM_AREA = (1200.0, 8000.0)
_LARGE_AREA = (1.25 * AREA_LARGE, 0.85)  # (min px, max fraction of the image)
_P_LARGE_IMAGE = 0.35
# Each earlier object keeps at least this fraction of its in-image area, and this many pixels.
_MIN_VISIBLE_FRACTION = 0.5
_MIN_VISIBLE_PIXELS = 12
# Visible pixels an object keeps so that its annotated (polygon) area stays in the size range
# it was drawn for; the polygon area is up to ~8 % below the pixel count for medium objects.
_KEEP_ABOVE = {"small": 0, "medium": 1.08 * AREA_SMALL, "large": 1.08 * AREA_LARGE}
# Least in-image pixels of a new object (large ones leave room to be partly covered).
_MIN_AREA = {"small": _MIN_VISIBLE_PIXELS, "medium": _KEEP_ABOVE["medium"], "large": _LARGE_AREA[0]}
_PLACEMENT_TRIES = 30



# ---------------------------------------------------------------------------------------------
# Scene rendering


def _ring(n, radius=1.0, phase=0.0):
    a = phase + np.arange(n) * (2 * np.pi / n)
    return np.stack([np.cos(a), np.sin(a)], axis=1) * radius


def _shoelace(pts):
    x, y = pts[:, 0], pts[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y)))


def _star():
    pts = _ring(10, phase=-np.pi / 2)
    pts[1::2] *= 0.45
    return pts


def _cross(w=0.3):
    return np.array(
        [[w, -1], [w, -w], [1, -w], [1, w], [w, w], [w, 1],
         [-w, 1], [-w, w], [-1, w], [-1, -w], [-w, -w], [-w, -1]], dtype=np.float64
    )  # fmt: skip


# Unit shapes (N, 2) around the origin and their areas; the ellipse is the circle squashed
# per object.
_UNIT_SHAPES = {
    "circle": _ring(48),
    "square": _ring(4, phase=np.pi / 4),
    "triangle": _ring(3, phase=-np.pi / 2),
    "star": _star(),
    "cross": _cross(),
    "ellipse": _ring(48),
}
_UNIT_AREAS = {name: _shoelace(pts) for name, pts in _UNIT_SHAPES.items()}


def _unit_shape(name, rng):
    """Vertices (N, 2) of a class's shape around the origin, and their area."""
    if name == "ellipse":
        aspect = rng.uniform(0.4, 0.65)
        return _UNIT_SHAPES[name] * np.array([1.0, aspect]), _UNIT_AREAS[name] * aspect
    return _UNIT_SHAPES[name], _UNIT_AREAS[name]


def _fill(pts, size):
    """Rasterise a polygon (N, 2) with sub-pixel vertices, on its bounding box only.

    Returns:
        tuple[tuple[slice, slice], np.ndarray] or None: the box inside the image and the bool
        mask on it; None when the polygon misses the image.
    """
    x0, y0 = np.maximum(np.floor(pts.min(axis=0)).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(pts.max(axis=0)).astype(int) + 1, size)
    if x1 <= x0 or y1 <= y0:
        return None
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    # OpenCV puts pixel centres at integer coordinates; ours are at +0.5.
    shifted = (pts - 0.5 - np.array([x0, y0])) * 16
    cv2.fillPoly(mask, [np.round(shifted).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return (slice(y0, y1), slice(x0, x1)), mask.astype(bool)


def _has_hole(mask):
    if not mask.any():
        return False
    _, hierarchy = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    return hierarchy is not None and bool((hierarchy[0][:, 3] >= 0).any())


def _field(rng, height, width, kind):
    """A texture field in [0, 1], float32 (height, width)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    theta = rng.uniform(0, np.pi)
    u = xx * np.float32(np.cos(theta)) + yy * np.float32(np.sin(theta))
    v = yy * np.float32(np.cos(theta)) - xx * np.float32(np.sin(theta))
    if kind == "noise":
        cells = int(rng.integers(3, 9))
        grid = rng.random((cells, cells)).astype(np.float32)
        return cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    if kind == "stripes":
        period = rng.uniform(5, 20)
        return 0.5 + 0.5 * np.sin(u * np.float32(2 * np.pi / period) + np.float32(rng.uniform(0, 2 * np.pi)))
    if kind == "checker":
        cell = np.float32(rng.uniform(6, 24))
        return ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(np.float32)
    if kind == "dots":
        period = np.float32(rng.uniform(6, 14))
        d = np.hypot((u % period) - period / 2, (v % period) - period / 2)
        return (d < period * np.float32(rng.uniform(0.2, 0.35))).astype(np.float32)
    if kind == "gradient":
        return (u - u.min()) / max(float(u.max() - u.min()), 1.0)
    return np.zeros((height, width), np.float32)  # "solid"


def _colour(rng):
    return rng.integers(0, 256, 3).astype(np.float32)


def _class_colour(rng, cls):
    """An RGB colour (3,) float32 in the hue sector of class ``cls`` (60 degrees per class, +-25).

    Saturation and value are random, so the hue is a prior, not a give-away; a low-light
    image's noise, colour cast and response curve blur exactly this cue.
    """
    hue = (cls * 60.0 + rng.uniform(-25.0, 25.0)) % 360.0
    hsv = np.array([[[hue / 2.0, rng.uniform(0.45, 1.0) * 255, rng.uniform(0.35, 1.0) * 255]]], np.float32)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _texture(rng, height, width, kinds, base=None, min_distance=0.0, cls=None):
    """A textured float32 RGB image (height, width, 3), values in [0, 255]: two colours mixed by a field.

    ``cls`` draws the main colour from that class's hue sector (objects); None: any colour.
    """
    draw = _colour if cls is None else (lambda r: _class_colour(r, cls))
    c1 = draw(rng)
    if base is not None:
        # Make sure the object stands out from what lies under it.
        for _ in range(20):
            if np.linalg.norm(c1 - base) >= min_distance:
                break
            c1 = draw(rng)
    c2 = np.clip(c1 + rng.normal(0, 30 if cls is not None else 60, 3), 0, 255).astype(np.float32)
    t = _field(rng, height, width, kinds[int(rng.integers(len(kinds)))])[..., None]
    return c1 * (1 - t) + c2 * t


def _draw_area(rng, size_class, image_size):
    if size_class == "small":
        low, high = _SMALL_AREA
    elif size_class == "medium":
        low, high = _MEDIUM_AREA
    else:
        low, high = _LARGE_AREA[0], _LARGE_AREA[1] * image_size**2
    return math.exp(rng.uniform(math.log(low), math.log(max(high, low))))


def _place(rng, name, size_class, image_size):
    """Polygon (N, 2) of one object: class shape, drawn area, random rotation and position."""
    unit, unit_area = _unit_shape(name, rng)
    scale = math.sqrt(_draw_area(rng, size_class, image_size) / unit_area)
    a = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    pts = unit @ rot.T * scale
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    if size_class == "large":
        # Large objects may run past the border; the in-image part is what counts.
        centre = rng.uniform(0.3 * image_size, 0.7 * image_size, 2)
    else:
        span = image_size - (hi - lo) - 2
        if (span < 0).any():
            return None
        centre = 1 - lo + rng.uniform(0, 1, 2) * span
    return pts + centre


def render_scene(rng, image_size):
    """Render one demo scene.

    Args:
        rng (numpy.random.Generator): the scene's generator.
        image_size (int): width and height in pixels.

    Returns:
        tuple[np.ndarray, list[tuple[int, np.ndarray]]]: the uint8 (H, W, 3) BGR image and,
        per object in drawing order, (class index 0-5, bool (H, W) visible mask).
    """
    size = image_size
    # Smooth backgrounds and at most 4 objects, 30 % of them small: a from-scratch Mask R-CNN
    # must reach a meaningful AP within the demo's few minutes of CPU training.
    image = _texture(rng, size, size, ("noise", "gradient"))
    count = int(rng.integers(1, 5))
    has_large = rng.random() < _P_LARGE_IMAGE and _LARGE_AREA[0] < _LARGE_AREA[1] * size**2
    # Per object: [class index, visible mask (H, W), visible pixels, least pixels it must keep]
    objects = []
    for k in range(count):
        cls = int(rng.integers(len(DEMO_CLASSES)))
        size_class = "large" if (has_large and k == 0) else ("small" if rng.random() < 0.3 else "medium")
        for _ in range(_PLACEMENT_TRIES):
            pts = _place(rng, DEMO_CLASSES[cls], size_class, size)
            filled = None if pts is None else _fill(pts, size)
            if filled is None:
                continue
            box, crop = filled
            area = int(crop.sum())
            if area < _MIN_AREA[size_class]:
                continue
            # Earlier objects must stay visible enough, in their size range, and hole-free.
            ok = True
            for obj in objects:
                covered = int((obj[1][box] & crop).sum())
                if covered == 0:
                    continue
                if obj[2] - covered < obj[3]:
                    ok = False
                    break
                left = obj[1].copy()
                left[box] &= ~crop
                if _has_hole(left):
                    ok = False
                    break
            if ok:
                break
        else:
            continue  # no valid placement: the scene has one object fewer
        base = image[box][crop].mean(axis=0)
        tex = _texture(rng, crop.shape[0], crop.shape[1],
                       ("solid", "stripes", "dots", "gradient", "noise"), base, 90.0, cls=cls)
        image[box][crop] = tex[crop]
        for obj in objects:
            obj[2] -= int((obj[1][box] & crop).sum())
            obj[1][box] &= ~crop
        visible = np.zeros((size, size), bool)
        visible[box] = crop
        keep = max(_MIN_VISIBLE_FRACTION * area, _MIN_VISIBLE_PIXELS, _KEEP_ABOVE[size_class])
        objects.append([cls, visible, area, keep])
    # Mild sensor-like noise, so flat colours are not trivially separable.
    image += rng.normal(0, 3.0, image.shape).astype(np.float32)
    bgr = np.clip(np.rint(image), 0, 255).astype(np.uint8)[:, :, ::-1]
    return np.ascontiguousarray(bgr), [(obj[0], obj[1]) for obj in objects]


def mask_to_polygons(mask):
    """COCO polygons that rasterise back to exactly the pixels of ``mask``.

    Contours are traced on the mask upsampled 2x (nearest), simplified by at most a quarter
    pixel and shifted to pixel-centre coordinates; pycocotools decodes them to the same mask
    (checked in the tests). The mask must have no holes.

    Args:
        mask (np.ndarray): bool (H, W).

    Returns:
        list[list[float]]: one flat ``[x0, y0, x1, y1, ...]`` polygon per connected part.
    """
    up = cv2.resize(mask.astype(np.uint8), None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(up, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    polygons = []
    for c in contours:
        c = cv2.approxPolyDP(c, 0.5, True).reshape(-1, 2).astype(np.float64)
        if len(c) >= 3:
            polygons.append([round(float(v), 2) for v in ((c + 0.5) / 2.0).ravel()])
    return polygons


def annotation_fields(cls, mask):
    """COCO annotation fields of one object (all but ``id`` and ``image_id``)."""
    polygons = mask_to_polygons(mask)
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    area = sum(_shoelace(np.asarray(p).reshape(-1, 2)) for p in polygons)
    return {
        "category_id": cls + 1,
        "segmentation": polygons,
        "area": round(area, 2),
        "bbox": [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1],
        "iscrowd": 0,
    }
