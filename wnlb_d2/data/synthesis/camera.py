"""Camera building blocks of the lv2021 pipeline: response curves and the RGGB Bayer mosaic.

A camera response function (CRF) maps linear irradiance in [0, 1] to the brightness stored in
the image; its inverse (ICRF) takes an image back to (relative) irradiance, where sensor noise
is signal-dependent.
"""

import logging
import os

import cv2
import numpy as np

__all__ = ["power_zero_safe", "GammaResponse", "TabulatedResponse", "load_dorf_curves", "mosaic_rggb",
           "demosaic_bilinear_rggb", "demosaic_bilinear_rggb_planes"]

logger = logging.getLogger(__name__)

#: Number of samples per curve in the DoRF file (``dorfCurves.txt``).
DORF_SAMPLES = 1024


def power_zero_safe(x, exponent, out=None):
    """``np.power(x, exponent)`` for ``x >= 0`` and ``exponent > 0``, bit for bit, fast on zeros.

    NumPy's float32 power takes a slow path for a zero base: on a clipped noisy plane (a sixth
    of its pixels at exactly 0) it costs 3-4x the power of the same plane without zeros. Zeros
    are turned into ones (``1 ** e`` is 1 on the fast path) and back: adding and subtracting
    0.0 leaves every other value unchanged, so the result equals ``np.power`` exactly.

    Args:
        x (np.ndarray): float32, any shape, >= 0.
        exponent (np.float32): > 0.
        out (np.ndarray or None): where to write (may be ``x`` itself).

    Returns:
        np.ndarray: float32, the shape of ``x``.
    """
    zeros = (x == 0).view(np.uint8).astype(x.dtype)
    if out is None:
        out = x + zeros
    else:
        np.add(x, zeros, out=out)
    np.power(out, exponent, out=out)
    out -= zeros
    return out


class GammaResponse:
    """The parametric CRF ``B = I ** (1 / gamma)`` (a display-gamma curve).

    Used when no DoRF file is given: real response curves are concave and close to a gamma of
    about 2.2 in their mid-tones, and one parameter keeps the model easy to reason about.
    """

    def __init__(self, gamma):
        if not gamma > 0:
            raise ValueError(f"GammaResponse: gamma must be > 0, got {gamma!r}")
        self.gamma = float(gamma)

    def forward(self, irradiance, out=None):
        """CRF. Args: irradiance (np.ndarray): any shape, in [0, 1]; out: where to write (may be
        ``irradiance`` itself). Returns: same shape."""
        return power_zero_safe(irradiance, np.float32(1.0 / self.gamma), out=out)

    def inverse(self, brightness):
        """ICRF. Args: brightness (np.ndarray): any shape, in [0, 1]. Returns: same shape."""
        return np.power(brightness, np.float32(self.gamma))


class TabulatedResponse:
    """A CRF given as samples ``brightness = f(irradiance)``, interpolated linearly.

    Args:
        irradiance (np.ndarray): shape (N,), increasing, in [0, 1].
        brightness (np.ndarray): shape (N,), non-decreasing, in [0, 1].
        name (str): the curve's name, for logs.
    """

    def __init__(self, irradiance, brightness, name=""):
        self.name = name
        self.irradiance = np.asarray(irradiance, dtype=np.float64)
        self.brightness = np.asarray(brightness, dtype=np.float64)
        # np.interp needs strictly increasing sample points; flat runs of a measured curve
        # (clipped shadows or highlights) would make the inverse ambiguous, so keep the
        # first sample of each run.
        b, first = np.unique(np.maximum.accumulate(self.brightness), return_index=True)
        self._inv_b = b
        self._inv_i = self.irradiance[first]

    def forward(self, irradiance, out=None):
        """CRF. Args: irradiance (np.ndarray): any shape; out: float32 array to write into (may be
        ``irradiance`` itself). Returns: float32, same shape."""
        result = np.interp(irradiance, self.irradiance, self.brightness)
        if out is None:
            return result.astype(np.float32)
        out[...] = result
        return out

    def inverse(self, brightness):
        """ICRF. Args: brightness (np.ndarray): any shape. Returns: float32, same shape."""
        return np.interp(brightness, self._inv_b, self._inv_i).astype(np.float32)


def _read_floats(lines, start, count, path, first=""):
    # ``first``: numbers that followed "I =" / "B =" on their own line, if any.
    values = [float(t) for t in first.split()]
    i = start
    while len(values) < count:
        if i >= len(lines):
            raise ValueError(f"DoRF file {path}: expected {count} numbers from line {start + 1}, "
                             f"found {len(values)} before the end of the file")
        try:
            values.extend(float(t) for t in lines[i].split())
        except ValueError:
            raise ValueError(f"DoRF file {path}, line {i + 1}: expected {count} numbers, found "
                             f"{len(values)} and then {lines[i].strip()[:40]!r}")
        i += 1
    if len(values) != count:
        raise ValueError(f"DoRF file {path}: expected {count} numbers from line {start + 1}, "
                         f"got {len(values)}")
    return np.asarray(values, dtype=np.float64), i


def _expect(lines, i, prefix, path):
    """Check that line ``i`` starts with ``prefix`` (spaces ignored); returns (next line, rest)."""
    line = lines[i].strip() if i < len(lines) else ""
    compact = line.replace(" ", "")
    if i >= len(lines) or not compact.startswith(prefix):
        got = line[:60] if i < len(lines) else "end of file"
        raise ValueError(f"DoRF file {path}, line {i + 1}: expected a line starting with "
                         f"{prefix!r}, got {got!r}")
    rest = line.split("=", 1)[1] if prefix.endswith("=") else ""
    return i + 1, rest


def load_dorf_curves(path):
    """Read the camera response curves of the DoRF database (``dorfCurves.txt``).

    The file holds blocks of: a name line, a ``graph ...`` line, an ``I =`` line followed by
    1024 irradiance samples, a ``B =`` line followed by 1024 brightness samples (numbers
    separated by white space, over any number of lines, possibly starting on the ``=`` line).

    Args:
        path (str): the file.

    Returns:
        list[TabulatedResponse]: the curves in file order.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not in that format, or a curve leaves [0, 1] or has a
            non-increasing I; the message names the file and the line or curve. A B that
            decreases in places is replaced by its running maximum, with a warning.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"DoRF curve file not found: {path!r} (INPUT.LOW_LIGHT.LV2021.CRF_FILE)")
    with open(path, "r") as f:
        lines = f.read().splitlines()
    curves = []
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        name = lines[i].strip()
        i, _ = _expect(lines, i + 1, "graph", path)
        i, rest = _expect(lines, i, "I=", path)
        irradiance, i = _read_floats(lines, i, DORF_SAMPLES, path, rest)
        i, rest = _expect(lines, i, "B=", path)
        brightness, i = _read_floats(lines, i, DORF_SAMPLES, path, rest)
        for label, arr in (("I", irradiance), ("B", brightness)):
            if arr.min() < 0 or arr.max() > 1:
                raise ValueError(f"DoRF file {path}, curve {name!r}: {label} must lie in [0, 1], "
                                 f"got [{arr.min()}, {arr.max()}]")
        if not np.all(np.diff(irradiance) > 0):
            raise ValueError(f"DoRF file {path}, curve {name!r}: I must be strictly increasing")
        if np.any(np.diff(brightness) < 0):
            # Measured curves may wiggle by a fraction of a level; a response is monotonic.
            logger.warning(f"DoRF file {path}, curve {name!r}: B decreases in places; using its "
                           f"running maximum")
            brightness = np.maximum.accumulate(brightness)
        curves.append(TabulatedResponse(irradiance, brightness, name=name))
    if not curves:
        raise ValueError(f"DoRF file {path} holds no curves")
    logger.info(f"Loaded {len(curves)} camera response curves from {path}")
    return curves


def mosaic_rggb(rgb):
    """Sample an RGB image with an RGGB Bayer pattern (R at the top-left pixel).

    Args:
        rgb (np.ndarray): array of shape (H, W, 3), RGB order, any dtype (uint8 too) and strides
            (a reversed-channel view of a BGR image works without a copy).

    Returns:
        np.ndarray: the raw image, shape (H, W), same dtype.
    """
    raw = np.empty(rgb.shape[:2], dtype=rgb.dtype)
    raw[0::2, 0::2] = rgb[0::2, 0::2, 0]
    raw[0::2, 1::2] = rgb[0::2, 1::2, 1]
    raw[1::2, 0::2] = rgb[1::2, 0::2, 1]
    raw[1::2, 1::2] = rgb[1::2, 1::2, 2]
    return raw


_KERNEL_RB = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=np.float32) / 4
_KERNEL_G = np.array([[0, 1, 0], [1, 4, 1], [0, 1, 0]], dtype=np.float32) / 4


def demosaic_bilinear_rggb(raw):
    """Bilinear demosaicing of an RGGB raw image.

    Each colour plane is masked to its own sites and convolved with the bilinear kernel, in
    float (OpenCV's Bayer conversions accept only 8/16-bit integers). ``BORDER_REFLECT_101``
    mirrors around the edge pixel, which keeps the parity of rows and columns and hence the
    Bayer pattern intact at the borders: a flat colour comes back unchanged.

    Args:
        raw (np.ndarray): float32 array of shape (H, W), H and W >= 2.

    Returns:
        np.ndarray: float32 RGB image of shape (H, W, 3).
    """
    h, w = raw.shape
    out = np.empty((h, w, 3), dtype=np.float32)
    for c, plane in enumerate(demosaic_bilinear_rggb_planes(raw)):
        out[:, :, c] = plane
    return out


def demosaic_bilinear_rggb_planes(raw):
    """:func:`demosaic_bilinear_rggb` as three separate planes (R, G, B), without interleaving.

    The same values, bit for bit; a caller that goes on per plane (a response curve, 8-bit
    quantisation) saves the interleaved float copy and can build the output in either order.

    Args:
        raw (np.ndarray): float32 array of shape (H, W), H and W >= 2.

    Returns:
        list[np.ndarray]: three C-contiguous float32 (H, W) arrays, R, G, B, each its own buffer.
    """
    raw = raw.astype(np.float32, copy=False)
    h, w = raw.shape
    planes = np.zeros((3, h, w), dtype=np.float32)
    planes[0, 0::2, 0::2] = raw[0::2, 0::2]
    planes[1, 0::2, 1::2] = raw[0::2, 1::2]
    planes[1, 1::2, 0::2] = raw[1::2, 0::2]
    planes[2, 1::2, 1::2] = raw[1::2, 1::2]
    return [cv2.filter2D(planes[c], -1, kernel, borderType=cv2.BORDER_REFLECT_101)
            for c, kernel in ((0, _KERNEL_RB), (1, _KERNEL_G), (2, _KERNEL_RB))]
