"""Commands end a failed write (full disk, refused write) with one line naming the file, exit 1."""

import errno
import os
import subprocess
import sys

import pytest

from wnlb_d2.utils.io import main_reporting_os_errors, os_error_message

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_an_os_error_of_a_command_is_one_line_naming_the_file():
    def full_disk(argv):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "out/model_final.pth")

    with pytest.raises(SystemExit) as e:
        main_reporting_os_errors("tool.py", full_disk)
    assert e.value.code == "tool.py: error: out/model_final.pth: No space left on device"
    assert main_reporting_os_errors("tool.py", lambda argv: 0) == 0
    assert os_error_message(OSError(errno.EACCES, "Permission denied")) == "PermissionError: Permission denied"


def test_a_tool_writing_into_a_file_instead_of_a_folder_says_so_in_one_line(tmp_path):
    pytest.importorskip("ultralytics")
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file")
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "make_yolo_configs.py"),
                           "--output", str(blocker / "configs")], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "YOLO_OFFLINE": "1"})
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("make_yolo_configs.py: error: ") and str(blocker) in last, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
