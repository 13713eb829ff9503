"""The built-in presets' networks (registered by name in `convnet.models.registry`). Every model
takes raw uint8 pixels and returns class probabilities."""

from __future__ import annotations

import keras
from keras import layers

from convnet.models.layers import FusedBatchNormalization

# Keras' default 0.99 lags in runs of a few hundred steps (see docs/benchmarks.md, BatchNorm).
BN_MOMENTUM = 0.9


def pixels_input(input_shape) -> keras.KerasTensor:
    """Raw uint8 pixels in; scaling happens inside the model so callers never preprocess."""
    return keras.Input(shape=input_shape, dtype="uint8", name="pixels")


def seed(input_shape, num_classes):
    """The article's network, layer for layer."""
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


def probabilities(x, num_classes: int):
    """The softmax head, in float32 whatever the compute precision, so the loss is exact."""
    return layers.Dense(num_classes, activation="softmax", dtype="float32")(x)


def conv_bn(x, filters: int, padding: str = "same", pool: str | None = None):
    """Conv 3x3 (no bias) -> optional 2x2 max-pool -> BatchNorm -> ReLU.

    Pooling before BatchNorm puts it on a tensor 4x smaller, for the same result as pooling after
    the ReLU wherever BatchNorm's scale is positive (both are monotonic); the step is cheaper for
    it (docs/benchmarks.md, "Measurements behind the presets' design choices").

    Args:
        padding: the convolution's, "same" or "valid".
        pool: None, or the max-pool's padding: "valid" drops an odd last row and column,
            "same" keeps them (7x7 -> 4x4).
    """
    x = layers.Conv2D(filters, 3, padding=padding, use_bias=False)(x)
    if pool:
        x = layers.MaxPooling2D(2, padding=pool)(x)
    x = FusedBatchNormalization(momentum=BN_MOMENTUM)(x)
    return layers.Activation("relu")(x)


def fast(input_shape, num_classes):
    """The seed's size with BatchNorm and a dropout before the head."""
    inputs = pixels_input(input_shape)
    x = layers.Rescaling(1 / 255)(inputs)
    x = conv_bn(x, 32, padding="valid", pool="valid")  # 26x26 -> 13x13
    x = conv_bn(x, 64, padding="valid", pool="valid")  # 11x11 -> 5x5
    x = conv_bn(x, 128, padding="valid")  # 3x3
    x = layers.Flatten()(x)
    x = layers.Dropout(0.2)(x)
    outputs = probabilities(x, num_classes)
    return keras.Model(inputs, outputs, name="fast")


def best(input_shape, num_classes):
    """A VGG-style net with its augmentation inside: active in fit, a no-op in predict, serve
    and export."""
    inputs = pixels_input(input_shape)
    x = layers.Rescaling(1 / 255)(inputs)
    # Whole-pixel shifts ("nearest"): bilinear interpolation blurs every shifted image, which test
    # images never are (docs/benchmarks.md, whole-pixel translation).
    x = layers.RandomTranslation(0.1, 0.1, fill_mode="constant", interpolation="nearest")(x)
    x = layers.RandomFlip("horizontal")(x)
    x = conv_bn(x, 32, pool="valid")  # 14x14
    x = conv_bn(x, 96)
    x = conv_bn(x, 96, pool="valid")  # 7x7
    x = conv_bn(x, 192)
    x = conv_bn(x, 192, pool="same")  # 4x4: "same" keeps the 7th row and column
    x = layers.Flatten()(x)
    x = layers.Dropout(0.1)(x)
    outputs = probabilities(x, num_classes)
    return keras.Model(inputs, outputs, name="best")
