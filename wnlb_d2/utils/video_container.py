"""Whether a video file is whole: the sizes its container declares against the bytes it has.

OpenCV's ``VideoWriter.write`` reports no failed write, so a video cut short by a full disk looks
written. AVI (RIFF chunks), MP4 (ISO base media boxes) and MKV (EBML elements) record the size
of their top-level parts, patched in when the file is closed; :func:`missing_video_bytes`
compares them with the file.
"""

import os
import struct

__all__ = ["missing_video_bytes"]


def missing_video_bytes(path):
    """What the top-level structure of an AVI, MP4 or MKV file says is missing from it, or None.

    Each container records the size of its top-level parts (RIFF chunks, ISO boxes, EBML
    elements), patched in when the file is closed; a file cut short by a failed write is smaller
    than they say (or, for MP4, lacks its ``moov`` index, written last). Bytes beyond the
    declared end are not counted as damage.

    Args:
        path (str): a ``.avi``, ``.mp4`` or ``.mkv`` file (other extensions: None).

    Returns:
        str or None: e.g. ``"the file has 20000 bytes where its container declares 31406"``.
    """
    ext = os.path.splitext(path)[1].lower()
    step = {".avi": _riff_chunk, ".mp4": _iso_box, ".mkv": _ebml_element}.get(ext)
    if step is None:
        return None
    size = os.path.getsize(path)
    pos, tags = 0, []
    with open(path, "rb") as f:
        while pos < size:
            f.seek(pos)
            part = step(f, size - pos)
            if part is None:  # an EBML element of unknown size runs to the end: nothing to compare
                return None
            tag, length = part
            tags.append(tag)
            pos += length
    if pos > size:
        return f"the file has {size} bytes where its container declares {pos}"
    if ext == ".mp4" and b"moov" not in tags:
        return "the file has no moov box (the index an MP4 writer adds last)"
    return None


def _riff_chunk(f, left):
    """(tag, bytes) of the RIFF chunk at the file position: 4-byte tag, little-endian size, padded to even."""
    head = f.read(8)
    if len(head) < 8:
        return b"", 8
    tag, n = struct.unpack("<4sI", head)
    return tag, 8 + n + (n & 1)


def _iso_box(f, left):
    """(type, bytes) of the ISO base media box at the file position (size 1: 64-bit size follows; 0: to the end)."""
    head = f.read(8)
    if len(head) < 8:
        return b"", 8
    n, tag = struct.unpack(">I4s", head)
    if n == 1:
        large = f.read(8)
        n = struct.unpack(">Q", large)[0] if len(large) == 8 else 16
    elif n == 0:
        n = left
    return tag, max(n, 8)


def _ebml_element(f, left):
    """(ID, bytes) of the EBML element at the file position; None when its size is "unknown"."""
    ident = _ebml_vint(f)
    size = _ebml_vint(f) if ident else None
    if not ident or not size:
        return b"", left + 1  # cut inside the element's header
    (id_value, id_len, _), (n, size_len, unknown) = ident, size
    if unknown:
        return None
    return id_value.to_bytes(id_len, "big"), id_len + size_len + n


def _ebml_vint(f):
    """(value without its length marker, bytes, whether all value bits are 1) of an EBML variable-size integer."""
    first = f.read(1)
    if not first or first[0] == 0:
        return None
    length = 9 - first[0].bit_length()  # leading zero bits + 1
    rest = f.read(length - 1)
    if len(rest) < length - 1:
        return None
    value = int.from_bytes(bytes([first[0] & ((1 << (8 - length)) - 1)]) + rest, "big")
    return value, length, value == (1 << (7 * length)) - 1
