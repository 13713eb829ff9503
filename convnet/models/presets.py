"""The built-in presets. Every model takes raw uint8 pixels and returns class probabilities."""

from __future__ import annotations

import keras
from keras import layers

from convnet.models.registry import register_preset


def pixels_input(input_shape) -> keras.KerasTensor:
    """Raw uint8 pixels in; scaling happens inside the model so callers never preprocess."""
    return keras.Input(shape=input_shape, dtype="uint8", name="pixels")


@register_preset(
    "seed",
    "The article's network as written: 3 convolutions, Dense(64), rmsprop, 15 epochs of 512.",
    epochs=15,
    batch_size=512,
    optimizer="rmsprop",
    val_split=0.3,
)
def seed(input_shape, num_classes):
    inputs = pixels_input(input_shape)
    x = layers.Rescaling(1 / 255)(inputs)
    x = layers.Conv2D(32, (3, 3), activation="relu")(x)
    x = layers.MaxPooling2D((2, 2))(x)
    x = layers.Conv2D(64, (3, 3), activation="relu")(x)
    x = layers.MaxPooling2D((2, 2))(x)
    x = layers.Conv2D(64, (3, 3), activation="relu")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(64, activation="relu")(x)
    outputs = layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="seed")
