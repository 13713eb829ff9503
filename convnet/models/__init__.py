"""Model presets, found by name."""

from convnet.models.layers import FusedBatchNormalization  # registered: saved models load it
from convnet.models.registry import (
    Preset,
    Recipe,
    create_model,
    get_preset,
    list_presets,
    register_preset,
)

__all__ = [
    "FusedBatchNormalization",
    "Preset",
    "Recipe",
    "create_model",
    "get_preset",
    "list_presets",
    "register_preset",
]
