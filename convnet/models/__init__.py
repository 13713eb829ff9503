"""Model presets: the registry (names, descriptions, recipes; no framework) apart from the Keras
builders (`convnet.models.builders`) and the factory that builds them (`convnet.models.factory`)."""

from convnet.models.recipe import Recipe
from convnet.models.registry import Preset, get_preset, list_presets, register_preset

__all__ = ["Preset", "Recipe", "get_preset", "list_presets", "register_preset"]
