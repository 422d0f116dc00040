#!/usr/bin/env python
"""Render one scene through each low-light pipeline, side by side (docs/synthesis_pipelines.png).

The scene is generated here (sky, sun, hills, a house, trees, a car, textured grass) because
no photo can be downloaded where the docs are built. Row 1: the images as they are; row 2:
each image brightened to the same mean as the input, which makes the noise and colour casts
of the dark images visible.

Usage:
    python tools/plot_synthesis.py [--output docs/synthesis_pipelines.png] [--seed 0]
"""

import argparse
import logging
import os

import cv2
import numpy as np

from wnlb_d2.data.synthesis import PIPELINES, build_pipeline, eval_rng

logger = logging.getLogger("plot_synthesis")


def make_scene(height=240, width=360, seed=0):
    """A natural-looking RGB test scene.

    Returns:
        np.ndarray: uint8 (height, width, 3) RGB.
    """
    rng = np.random.default_rng(seed)
    h, w = height, width
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = (yy / (0.55 * h))[..., None]
    img = (1 - t) * np.array([70, 120, 200]) + t * np.array([230, 190, 150])  # dusk sky
    cv2.circle(img, (int(0.8 * w), int(0.2 * h)), int(0.07 * h), (255, 235, 170), -1, cv2.LINE_AA)
    hill = (0.55 * h + 0.06 * h * np.sin(xx[0] / w * 7) + 0.04 * h * np.sin(xx[0] / w * 17 + 1)).astype(int)
    for x in range(w):
        img[hill[x]:, x] = (60, 110, 50)
    grass = rng.normal(0, 14, (h, w, 1)) * np.array([0.6, 1.0, 0.5])
    img += grass * (yy[..., None] > hill[None, :, None])
    # A house with a roof, door and two lit windows.
    x0, y0, bw, bh = int(0.12 * w), int(0.5 * h), int(0.22 * w), int(0.25 * h)
    cv2.rectangle(img, (x0, y0), (x0 + bw, y0 + bh), (200, 170, 130), -1)
    roof = np.array([[x0 - 8, y0], [x0 + bw + 8, y0], [x0 + bw // 2, y0 - int(0.14 * h)]], np.int32)
    cv2.fillPoly(img, [roof], (150, 50, 40), cv2.LINE_AA)
    cv2.rectangle(img, (x0 + bw // 2 - 8, y0 + bh - 30), (x0 + bw // 2 + 8, y0 + bh), (90, 60, 40), -1)
    for dx in (12, bw - 30):
        cv2.rectangle(img, (x0 + dx, y0 + 12), (x0 + dx + 18, y0 + 30), (250, 230, 120), -1)
    # Trees with textured crowns.
    for cx in (0.45, 0.52, 0.93):
        cx = int(cx * w)
        cv2.rectangle(img, (cx - 3, int(0.6 * h)), (cx + 3, int(0.78 * h)), (80, 55, 35), -1)
        cv2.ellipse(img, (cx, int(0.55 * h)), (int(0.045 * w), int(0.12 * h)), 0, 0, 360, (40, 100, 45), -1)
    crowns = (img[..., 1] > 95) & (img[..., 0] < 45)
    img[crowns] += rng.normal(0, 18, (int(crowns.sum()), 1))
    # A red car with dark wheels and a white signpost.
    cx, cy = int(0.66 * w), int(0.82 * h)
    cv2.rectangle(img, (cx - 40, cy - 16), (cx + 40, cy + 6), (200, 30, 35), -1)
    cv2.rectangle(img, (cx - 22, cy - 30), (cx + 20, cy - 16), (170, 25, 30), -1)
    cv2.rectangle(img, (cx - 18, cy - 27), (cx + 16, cy - 18), (150, 200, 230), -1)
    for wx in (cx - 24, cx + 24):
        cv2.circle(img, (wx, cy + 6), 9, (25, 25, 25), -1, cv2.LINE_AA)
    cv2.rectangle(img, (int(0.88 * w), int(0.66 * h)), (int(0.97 * w), int(0.72 * h)), (240, 240, 235), -1)
    return np.clip(img, 0, 255).astype(np.uint8)


def _label(img, text):
    out = img.copy()
    cv2.rectangle(out, (0, 0), (out.shape[1], 22), (0, 0, 0), -1)
    cv2.putText(out, text, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def _brighten(img, target_mean):
    gain = target_mean / max(img.mean(), 1e-3)
    return np.clip(img.astype(np.float32) * gain, 0, 255).astype(np.uint8)


def render(seed=0, height=200, width=300):
    """Build the figure.

    Returns:
        tuple[np.ndarray, dict]: uint8 RGB figure (2 rows x (1 + len(PIPELINES)) panels) and the
        sampled parameters of each pipeline.
    """
    scene = make_scene(height, width, seed)
    top, bottom, params = [_label(scene, "input")], [_label(scene, "input")], {}
    for name in PIPELINES:
        # eval_rng: the figure is the same every time the script runs.
        dark, p = build_pipeline(name)(scene, eval_rng(seed, f"docs-{name}"), input_format="RGB")
        params[name] = p
        top.append(_label(dark, f"{name} (mean {dark.mean():.0f} vs {scene.mean():.0f})"))
        bottom.append(_label(_brighten(dark, scene.mean()), f"{name}, brightened x{scene.mean() / dark.mean():.1f}"))
    sep = lambda n: np.full((height, 4, 3), 255, np.uint8)  # noqa: E731
    row = lambda panels: np.concatenate(sum([[p, sep(0)] for p in panels], [])[:-1], axis=1)  # noqa: E731
    figure = np.concatenate([row(top), np.full((4, row(top).shape[1], 3), 255, np.uint8), row(bottom)], axis=0)
    return figure, params


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "..", "docs",
                                                         "synthesis_pipelines.png"), help="PNG to write")
    parser.add_argument("--seed", type=int, default=0, help="seed of the scene and of the degradations")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    figure, params = render(args.seed)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    if not cv2.imwrite(args.output, figure[:, :, ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise OSError(f"Could not write {args.output}")
    for name, p in params.items():
        logger.info(f"{name}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                            for k, v in p.items()))
    logger.info(f"Wrote {os.path.abspath(args.output)}")


if __name__ == "__main__":
    main()
