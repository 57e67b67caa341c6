"""Typed, frozen, validated-at-once settings: what they are, how they load, how they print.

- :mod:`~hpc2edge.config.settings`: the dataclasses and the checks that need no files;
- :mod:`~hpc2edge.config.load`: a TOML file plus ``HPC2EDGE_*`` variables -> one ``Settings``;
- :mod:`~hpc2edge.config.files`: checks of the files the settings point at;
- :mod:`~hpc2edge.config.derived`: storage URLs, the secrets folder, another role's view;
- :mod:`~hpc2edge.config.render`: the masked TOML that is printed and written.

The names below are the public API; code outside this package imports them from here.
"""

from hpc2edge.config.derived import (
    absolute,
    for_role,
    measurement_store_url,
    pid_file,
    role_config_path,
    secrets_dir,
    study_storage_url,
)
from hpc2edge.config.files import file_problems, signing_file_problems
from hpc2edge.config.load import load_settings
from hpc2edge.config.render import mask_url, render_masked, write_role_config
from hpc2edge.config.settings import (
    DEFAULT_PORT,
    DEFAULT_STATE_DIR,
    ENV_CONFIG,
    ENV_PASSWORD,
    ENV_PREFIX,
    MASK,
    BrokerSettings,
    EdgeSettings,
    SearchSettings,
    SecuritySettings,
    Settings,
    TLSSettings,
    WorkerSettings,
)

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_STATE_DIR",
    "ENV_CONFIG",
    "ENV_PASSWORD",
    "ENV_PREFIX",
    "MASK",
    "BrokerSettings",
    "EdgeSettings",
    "SearchSettings",
    "SecuritySettings",
    "Settings",
    "TLSSettings",
    "WorkerSettings",
    "absolute",
    "file_problems",
    "for_role",
    "load_settings",
    "mask_url",
    "measurement_store_url",
    "pid_file",
    "render_masked",
    "role_config_path",
    "secrets_dir",
    "signing_file_problems",
    "study_storage_url",
    "write_role_config",
]
