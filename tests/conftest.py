"""Puts this folder on sys.path (pytest rootdir conftest) so tests import ``helpers``."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module: the machine is shared, and oversubscription slows
    small ops 10x. Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
