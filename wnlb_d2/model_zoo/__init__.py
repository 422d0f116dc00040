"""The configs shipped with wnlb_d2 (``configs/`` of the repository, inside the wheel too), by name.

See :mod:`wnlb_d2.model_zoo.model_zoo`.
"""

from .model_zoo import (CONFIGS_PREFIX, configs_root, get_config, get_config_file, list_configs,
                        resolve_config_file, shipped_config, shipped_config_of_path)

__all__ = ["CONFIGS_PREFIX", "configs_root", "get_config", "get_config_file", "list_configs",
           "resolve_config_file", "shipped_config", "shipped_config_of_path"]
