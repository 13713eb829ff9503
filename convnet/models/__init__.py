"""Model presets, found by name."""

from convnet.models.registry import (
    Preset,
    Recipe,
    create_model,
    get_preset,
    list_presets,
    register_preset,
)

__all__ = ["Preset", "Recipe", "create_model", "get_preset", "list_presets", "register_preset"]
