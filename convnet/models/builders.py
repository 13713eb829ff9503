"""The built-in presets' networks (registered by name in `convnet.models.registry`). Every model
takes raw uint8 pixels and returns class probabilities."""

from __future__ import annotations

import keras
from keras import layers

from convnet.models.layers import FusedBatchNormalization
from convnet.models.recipe import Augment

NO_AUGMENT = Augment()

# Keras' default 0.99 lags in runs of a few hundred steps (see docs/benchmarks.md, BatchNorm).
BN_MOMENTUM = 0.9


def pixels_input(input_shape) -> keras.KerasTensor:
    """Raw uint8 pixels in; scaling happens inside the model so callers never preprocess."""
    return keras.Input(shape=input_shape, dtype="uint8", name="pixels")


# The side from which the seed's and fast's unpadded 3x3 convolutions and 2x2 poolings leave
# a feature map (28 -> 26 -> 13 -> 11 -> 5 -> 3; 18 -> 2); smaller images are padded ("same")
# so every stage keeps at least one pixel (16 -> 8 -> 4; 8 -> 4 -> 2).
MIN_UNPADDED_SIDE = 18
# A feature map of at most this many pixels is flattened into the head, as at 28x28 and 32x32;
# a larger one (from images of about 48x48 up) is averaged over space first, so the head's size
# does not grow with the image.
MAX_FLATTENED_PIXELS = 64


def augmentation(x, augment: Augment, input_shape):
    """The training augmentation (`Augment`), as Keras layers: active in fit, a no-op in
    predict, serve and export. Zero-filled, like the test-time shifts."""
    height, width = input_shape[:2]
    if augment.translate:
        # Whole-pixel shifts ("nearest"): bilinear interpolation blurs every shifted image,
        # which test images never are (docs/benchmarks.md, whole-pixel translation).
        x = layers.RandomTranslation(
            augment.translate / height,
            augment.translate / width,
            fill_mode="constant",
            interpolation="nearest",
        )(x)
    if augment.flip:
        x = layers.RandomFlip("horizontal")(x)
    if augment.rotate:
        x = layers.RandomRotation(augment.rotate / 360, fill_mode="constant")(x)
    if augment.zoom:
        x = layers.RandomZoom(augment.zoom, fill_mode="constant")(x)
    return x


def head_features(x):
    """The last feature map as the head's input: flattened while small, else averaged over
    space (`MAX_FLATTENED_PIXELS`)."""
    height, width = x.shape[1:3]
    if height * width <= MAX_FLATTENED_PIXELS:
        return layers.Flatten()(x)
    return layers.GlobalAveragePooling2D()(x)


def seed(input_shape, num_classes, augment: Augment = NO_AUGMENT):
    """The article's network, layer for layer at 28x28 (and any size from 18 to 46 pixels).

    Smaller images get "same" padding (`MIN_UNPADDED_SIDE`), larger ones global average pooling
    before the head (`MAX_FLATTENED_PIXELS`).
    """
    inputs = pixels_input(input_shape)
    x = augmentation(layers.Rescaling(1 / 255)(inputs), augment, input_shape)
    padding = "valid" if min(input_shape[:2]) >= MIN_UNPADDED_SIDE else "same"
    x = layers.Conv2D(32, (3, 3), activation="relu", padding=padding)(x)
    x = layers.MaxPooling2D((2, 2), padding=padding)(x)
    x = layers.Conv2D(64, (3, 3), activation="relu", padding=padding)(x)
    x = layers.MaxPooling2D((2, 2), padding=padding)(x)
    x = layers.Conv2D(64, (3, 3), activation="relu", padding=padding)(x)
    x = head_features(x)
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


def filters(base: int, width: float) -> int:
    """`base` filters scaled by `width`, at least 8."""
    return max(8, round(base * width))


def fast(
    input_shape,
    num_classes,
    augment: Augment = NO_AUGMENT,
    width: float = 1.0,
    dropout: float | None = None,
):
    """The seed's size with BatchNorm and a dropout (0.2) before the head; adapts to the image
    size as the seed does. `width` scales the filters."""
    inputs = pixels_input(input_shape)
    x = augmentation(layers.Rescaling(1 / 255)(inputs), augment, input_shape)
    padding = "valid" if min(input_shape[:2]) >= MIN_UNPADDED_SIDE else "same"
    x = conv_bn(x, filters(32, width), padding=padding, pool=padding)  # 28x28: 26 -> 13
    x = conv_bn(x, filters(64, width), padding=padding, pool=padding)  # 11x11 -> 5x5
    x = conv_bn(x, filters(128, width), padding=padding)  # 3x3
    x = head_features(x)
    x = layers.Dropout(0.2 if dropout is None else dropout)(x)
    outputs = probabilities(x, num_classes)
    return keras.Model(inputs, outputs, name="fast")


def best(
    input_shape,
    num_classes,
    augment: Augment = NO_AUGMENT,
    width: float = 1.0,
    dropout: float | None = None,
):
    """A VGG-style net with its augmentation inside and a dropout (0.1) before the head. Its
    "same" convolutions take any size; the last pooling keeps an odd row and column (7x7 ->
    4x4; 8x8 images end at 1x1). `width` scales the filters."""
    inputs = pixels_input(input_shape)
    x = augmentation(layers.Rescaling(1 / 255)(inputs), augment, input_shape)
    x = conv_bn(x, filters(32, width), pool="same")  # 28x28: 14x14
    x = conv_bn(x, filters(96, width))
    x = conv_bn(x, filters(96, width), pool="same")  # 7x7
    x = conv_bn(x, filters(192, width))
    x = conv_bn(x, filters(192, width), pool="same")  # 4x4: "same" keeps the 7th row and column
    x = head_features(x)
    x = layers.Dropout(0.1 if dropout is None else dropout)(x)
    outputs = probabilities(x, num_classes)
    return keras.Model(inputs, outputs, name="best")
