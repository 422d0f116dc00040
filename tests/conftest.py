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


@pytest.fixture(autouse=True)
def _no_log_handlers_on_closed_streams():
    """Drop logging handlers whose stream was closed by an earlier test.

    detectron2's ``setup_logger`` is cached: a handler it made on pytest's captured stdout
    outlives that test, and every later log line through it prints "--- Logging error ---"
    (I/O operation on closed file), noise that would hide or fake a test's own logging errors.
    """
    import logging

    loggers = [logging.getLogger()] + [lg for lg in logging.Logger.manager.loggerDict.values()
                                       if isinstance(lg, logging.Logger)]
    for lg in loggers:
        for handler in list(lg.handlers):
            if getattr(getattr(handler, "stream", None), "closed", False):
                lg.removeHandler(handler)
    yield
