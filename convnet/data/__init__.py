"""Reading data: one reader per format, each returning the same `Dataset` record.

The readers are `csv`, `npz`, `idx`, `folder`, `npy` and `memory` (data in Python); `loading`
reads a source by its format or its name and makes a run's training and test sets of it;
`matching` matches a test set's classes to the training data's; `training_data` makes them what
one training fits on; `settings` holds how a config names its data. This module is their face:
it names what the rest of convnet, and its users, import from `convnet.data`. It loads each
name's module when the name is first used (lazy_loader), so that `convnet.config` can check its
data settings with `settings` without loading the readers (numpy, polars, Pillow: 0.6 s).
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "dataset": ["DataRecord", "Dataset"],
        "loading": [
            "DEFAULT_TEST_SPLIT",
            "NAMED_CLASS_SETS",
            "HeldOutTestWarning",
            "carries_test_set",
            "guess_format",
            "hold_out_test",
            "load_config_data",
            "load_source",
            "load_test",
            "load_train_test",
            "resolve_class_names",
        ],
        "matching": ["matched_to_training", "relabel"],
        "settings": ["FORMATS"],
        "sources": ["load_fashion_mnist"],
        "split": ["split"],
        "training_data": [
            "TrainingData",
            "check_classes",
            "fitted_to_data",
            "load_training_data",
            "read_given",
        ],
    },
)
