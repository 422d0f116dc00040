"""Puts this folder on sys.path (pytest rootdir conftest) so tests import ``helpers``."""
