"""The built-in presets, seed, fast and best: registered as any other preset is
(`convnet.models.registry`), their networks built by `convnet.models.builders` when a model is
asked for. `convnet.models` imports this module, so every import of the package registers them.
"""

from __future__ import annotations

from convnet.models.registry import register_preset

BUILDERS = "convnet.models.builders"

register_preset(
    "seed",
    "The article's network as written: 3 convolutions, Dense(64), rmsprop, 15 epochs of 512.",
    builder=f"{BUILDERS}:seed",
    # Steps before test accuracy stops climbing (within 1 point of the best) on the 1,437 8x8
    # digits, 3 seeds: 0.976 at 300, 0.73 at its own 30 there (`python -m bench.steps_needed`,
    # docs/benchmarks.md). Fashion-MNIST gives it 1,245. The recipe stays the article's.
    min_steps=300,
    epochs=15,
    batch_size=512,
    optimizer="rmsprop",
    val_split=0.3,
)

register_preset(
    "fast",
    "Seed-sized net with BatchNorm after pooling, AdamW, warm-up + cosine, bfloat16 compute "
    "where the CPU has it: 5 epochs.",
    builder=f"{BUILDERS}:fast",
    min_steps=90,  # as seed's: 0.994 at 90 steps, 0.986 at 60, 0.79 at its own 30 there
    epochs=5,
    batch_size=256,
    optimizer="adamw",
    learning_rate=4e-3,
    schedule="cosine",
    warmup_epochs=1.0,
    weight_decay=1e-4,
    label_smoothing=0.1,
    val_split=0.1,
    calibrate=True,
    precision="auto",
)

register_preset(
    "best",
    "VGG-style net with BatchNorm, translation (+ flip for mirror-symmetric classes) "
    "augmentation, bfloat16 compute where the CPU has it, restore-best, 1-pixel shift TTA.",
    builder=f"{BUILDERS}:best",
    min_steps=96,  # as seed's: 0.991 at 96 steps, 0.976 at 60; its own 144 there reach 0.993
    # 24 epochs fit the budget on a CPU with AMX; where they do not, the budget plans fewer and
    # the schedule ends with them, so `best` stays a 10-minute preset on any machine (epoch
    # times by CPU: docs/benchmarks.md, bench.time_to_accuracy).
    epochs=24,
    time_budget=590.0,  # seconds of fit, validation and backups included
    batch_size=256,
    optimizer="adamw",
    learning_rate=3e-3,
    schedule="cosine",
    warmup_epochs=2.0,
    weight_decay=5e-4,
    label_smoothing=0.1,
    val_split=0.1,
    restore_best=True,
    translate=None,  # a tenth of the side: 2.8 pixels at 28x28
    flip=None,  # mirrors Fashion-MNIST, not digits or letters
    shift_tta=1,  # 18 views with the flip: +0.33 points of validation accuracy on average
    calibrate=True,
    precision="auto",
)
