"""Reading data: one reader per format, each returning the same `Dataset` record.

The readers are `csv`, `npz`, `idx`, `folder`, `npy` and `memory` (data in Python); `loading`
reads a source by its format or its name and makes a run's training and test sets of it;
`training_data` makes them what one training fits on. This module is their face: it names what
the rest of convnet, and its users, import from `convnet.data`.
"""

from convnet.config import FORMATS
from convnet.data.dataset import DataRecord, Dataset
from convnet.data.loading import (
    DEFAULT_TEST_SPLIT,
    NAMED_CLASS_SETS,
    HeldOutTestWarning,
    carries_test_set,
    guess_format,
    hold_out_test,
    load_config_data,
    load_source,
    load_test,
    load_train_test,
    matched_to_training,
    relabel,
    resolve_class_names,
)
from convnet.data.sources import load_fashion_mnist
from convnet.data.split import split
from convnet.data.training_data import (
    TrainingData,
    check_classes,
    fitted_to_data,
    load_training_data,
    read_given,
)

__all__ = [
    "DEFAULT_TEST_SPLIT",
    "FORMATS",
    "NAMED_CLASS_SETS",
    "DataRecord",
    "Dataset",
    "HeldOutTestWarning",
    "TrainingData",
    "carries_test_set",
    "check_classes",
    "fitted_to_data",
    "guess_format",
    "hold_out_test",
    "load_config_data",
    "load_fashion_mnist",
    "load_source",
    "load_test",
    "load_train_test",
    "load_training_data",
    "matched_to_training",
    "read_given",
    "relabel",
    "resolve_class_names",
    "split",
]
