"""Model presets: the registry (names, descriptions, recipes; no framework) and the built-in
presets registered in it (`convnet.models.presets`), apart from the Keras builders
(`convnet.models.builders`) and the factory that builds them (`convnet.models.factory`).

Importing any module of this package runs this one first, which registers the built-in presets.
"""

from convnet.models import presets  # noqa: F401  (registers seed, fast and best)
from convnet.models.recipe import Recipe
from convnet.models.registry import Preset, get_preset, list_presets, register_preset

__all__ = ["Preset", "Recipe", "get_preset", "list_presets", "register_preset"]
