"""Measures of computation in superposition (the boolean_and kind): accuracy of every pairwise AND.

`measures()` gives `analyze` measures of one model's params on `data = (x, labels)` (every input
with at most 2 ones, `tasks.boolean_and.all_inputs`): acc (inputs with every output right), tpr,
fpr and max_err, as `tasks.boolean_and.metrics` defines them.
"""

from __future__ import annotations

from mi_jax.models import toy
from mi_jax.tasks.boolean_and import metrics


def measures() -> dict:
    """{"accuracy": fn(params, (x, labels)) -> {"acc", "tpr", "fpr", "max_err"}}: one forward pass."""
    def accuracy(params, data):
        x, labels = data
        return metrics(toy.apply_mlp(params, x), labels, x)

    return {"accuracy": accuracy}
