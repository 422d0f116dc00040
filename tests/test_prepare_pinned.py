"""The bytes of offline low-light test sets are pinned: any change of the rendering, the seeding,
the encoding or the file writing that changes an output file fails here.

The digests were taken from the code before the preparation was made faster (issue 24): the
evaluation test sets (``datasets/prepare_lowlight_coco.py`` and the on-the-fly evaluation
degradation, which gives the same pixels) must stay byte-identical. The pixel digests tell a
changed degradation (they move) from a changed encoder, e.g. another libjpeg in a new OpenCV
(only the file digests move).
"""

import hashlib
import json
import os

import cv2
import numpy as np
import pytest

from wnlb_d2.data.prepare import prepare_lowlight

H, W = 48, 64
NAMES = ["a.png", "b.jpg", "sub/c.png", "d.jpeg"]


def _scene(k):
    """A smooth colour scene with edges, from arithmetic only (no generator whose stream could change)."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    img = np.stack([
        128 + 100 * np.sin(x / (5.0 + k) + y / 11.0),
        128 + 90 * np.cos(y / (4.0 + k) - x / 13.0),
        40 + 3 * x + 1.5 * y * (k + 1) % 200,
    ], axis=-1)
    img[(x - 20 - 4 * k) ** 2 + (y - 24) ** 2 < 90] = (250, 240, 30 * k)  # a bright disc: highlights
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _write_coco(root):
    images_dir = os.path.join(root, "images")
    os.makedirs(os.path.join(images_dir, "sub"))
    for k, name in enumerate(NAMES):
        # PNG inputs: the pixels read back are exactly these (JPEG inputs depend on the decoder
        # only through cv2.imread, the same call the mapper makes).
        params = [cv2.IMWRITE_JPEG_QUALITY, 90] if name.endswith(("jpg", "jpeg")) else []
        assert cv2.imwrite(os.path.join(images_dir, name), _scene(k), params)
    coco = {"images": [{"id": 10 + k, "file_name": n, "height": H, "width": W} for k, n in enumerate(NAMES)],
            "annotations": [], "categories": [{"id": 1, "name": "thing"}]}
    json_file = os.path.join(root, "instances.json")
    with open(json_file, "w") as f:
        json.dump(coco, f)
    return images_dir, json_file


def _blake2b(data):
    return hashlib.blake2b(data, digest_size=16).hexdigest()


# (file digest, digest of the decoded BGR pixels) per output image, seed 3, default JPEG quality 95
# and PNG level 3: the same from the code before issue 24 (commit fd0d382) and before the
# preparation was made faster (b0c5d6c), with OpenCV 4.14.
PINNED = {
    "lv2021": {
        "a.png": ("d47188ad1400d8adbf4e9b9e4f5dd1ba", "88caac1c733e9b8de33feed09cc6c32c"),
        "b.jpg": ("d68e3face5724b69339035bb5e3632dd", "78f9d11876ccf05d95f84739b51af999"),
        "sub/c.png": ("67c7fc6d8e7ba06317e7a97d0141adab", "f1975182af285e17436e1d3a4d3a4eec"),
        "d.jpeg": ("2b9b0ea3f89bf5cadb6bf9cc87aa3cd1", "e5dd5604c84197df02cff4625a285359"),
    },
    "unprocess": {
        "a.png": ("525dfb385c2ebacb0cd47bdc71a38186", "fb62f3775a565e5e201626b2cefff112"),
        "b.jpg": ("1454d31b3ddb38c7bdd43a399f2d1f27", "732c13595fe55bcbdec489cea5649f01"),
        "sub/c.png": ("3a9dbf8584da9163bd16a237a935cfb6", "700a1b8ab5211f2f4ea94df67b9ebc93"),
        "d.jpeg": ("e250da21d3f28a2768ed704b13eb329f", "cce03d63c31081c491f67e940f0f99e2"),
    },
}


@pytest.mark.parametrize("pipeline", sorted(PINNED))
@pytest.mark.parametrize("workers", [1, 2])
def test_prepared_images_keep_their_pinned_bytes(tmp_path, pipeline, workers):
    images_dir, json_file = _write_coco(str(tmp_path / "src"))
    out = str(tmp_path / "low")
    result = prepare_lowlight(images_dir, json_file, out, pipeline=pipeline, seed=3, workers=workers,
                              progress=False)
    assert result.complete and result.rendered == len(NAMES)
    with open(os.path.join(out, "manifest.jsonl")) as f:
        records = {r["file_name"]: r for r in map(json.loads, f.readlines()[1:])}
    got = {}
    for name in NAMES:
        with open(os.path.join(out, name), "rb") as f:
            data = f.read()
        assert records[name]["blake2b"] == _blake2b(data) and records[name]["size"] == len(data)
        pixels = cv2.imread(os.path.join(out, name), cv2.IMREAD_COLOR)
        assert pixels.shape == (H, W, 3)
        got[name] = (_blake2b(data), _blake2b(pixels.tobytes()))
    assert got == PINNED[pipeline]
