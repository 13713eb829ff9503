"""Temperature scaling: probabilities that say how often the model is right (Guo et al., 2017).

Label smoothing and averaging over test-time views both leave a network's probabilities less
confident than its accuracy warrants. One temperature T, fitted on the validation split, divides
the logits of every view; it is folded into the softmax layer's weights, so the saved model
still maps uint8 pixels to probabilities and predict, serve and export need nothing new. A
single view's ranking of the classes is unchanged.
"""

from __future__ import annotations

import keras
import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, logsumexp

from convnet.data.dataset import Dataset
from convnet.errors import ConfigError
from convnet.evaluation import TestTimeAugmentation, retracing_unlogged
from convnet.interrupts import Deferred

# A one-parameter fit needs few examples; each costs one model pass per test-time view.
MAX_EXAMPLES = 2000
BOUNDS = (0.05, 20.0)


def calibrate(model, validation: Dataset, tta: TestTimeAugmentation) -> float:
    """Fits the temperature on `validation` (at most `MAX_EXAMPLES` of it) and folds it into
    `model`'s softmax layer.

    Returns:
        The temperature: below 1 sharpens the probabilities, above 1 softens them.

    Raises:
        ConfigError: the model does not end in a Dense layer with a softmax.
    """
    head = softmax_head(model)
    # The one input as such, not a list of one: fed an array, a list-input model warns on JAX.
    features = keras.Model(model.inputs[0], head.input)
    kernel, bias = (np.asarray(w, np.float64) for w in (head.kernel, head.bias))
    data = validation.take(slice(0, MAX_EXAMPLES))
    # A view at a time; a Ctrl-C or SIGTERM waits for the framework's calls (convnet.interrupts).
    with retracing_unlogged(), Deferred():
        logits = [
            np.asarray(features.predict(view, batch_size=1024, verbose=0), np.float64) @ kernel
            + bias
            for view in tta.views(data.x)
        ]
    temperature = fit_temperature(log_softmax(np.stack(logits), axis=-1), data.y)
    head.kernel.assign(head.kernel / temperature)
    head.bias.assign(head.bias / temperature)
    return temperature


def fit_temperature(log_probabilities: np.ndarray, y: np.ndarray) -> float:
    """The T that minimises the cross-entropy of softmax(log p / T), averaged over views.

    Args:
        log_probabilities: log class probabilities (or logits: they differ by a constant per
            image, which the softmax cancels) of each view, shape (views, N, classes).
        y: integer labels, shape (N,).
    """
    log_p = log_probabilities.astype(np.float64)
    rows = np.arange(len(y))

    def loss(log_t: float) -> float:
        tempered = log_softmax(log_p / np.exp(log_t), axis=-1)
        mean_over_views = logsumexp(tempered, axis=0) - np.log(len(log_p))
        return -mean_over_views[rows, y].mean()

    found = minimize_scalar(loss, bounds=np.log(BOUNDS), method="bounded")
    return float(np.exp(found.x))


def softmax_head(model):
    """The model's last layer, if it is a Dense layer with a softmax and a bias."""
    head = model.layers[-1]
    if not (
        isinstance(head, keras.layers.Dense)
        and head.activation is keras.activations.softmax
        and head.use_bias
    ):
        raise ConfigError(
            f"calibrate needs a model that ends in Dense(..., activation='softmax'); "
            f"{model.name!r} ends in {type(head).__name__} {head.name!r}."
        )
    return head
