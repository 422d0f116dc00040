"""wnlb_d2.utils.video_container: a whole video passes, one cut short by a failed write is named."""

import cv2
import numpy as np
import pytest

from wnlb_d2.utils.video_container import missing_video_bytes


@pytest.mark.parametrize("ext, codec", [(".avi", "MJPG"), (".mp4", "mp4v"), (".mkv", "MJPG")])
def test_whole_and_truncated_videos(tmp_path, ext, codec):
    path = str(tmp_path / f"v{ext}")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*codec), 10, (64, 48))
    if not writer.isOpened():
        pytest.skip(f"this OpenCV build writes no {ext}")
    rng = np.random.default_rng(0)
    for _ in range(6):
        writer.write(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    writer.release()
    assert missing_video_bytes(path) is None
    data = open(path, "rb").read()
    cut = tmp_path / f"cut{ext}"
    cut.write_bytes(data[: len(data) * 2 // 3])  # what a full disk leaves
    message = missing_video_bytes(str(cut))
    assert message and ("bytes where its container declares" in message or "no moov box" in message), message
    assert missing_video_bytes(str(tmp_path / "x.gif")) is None  # a container it does not know: not judged
