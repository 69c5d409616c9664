"""Linear probes fitted per checkpoint inside a measure (no Python loop; jit / vmap / lax.map safe).

Features X [sample, d] (an activation at some positions), targets Y [sample, t] or labels y [sample];
a fixed split into fitting and held-out samples.

    ridge      W = (X̃ᵀX̃ + λ n I)⁻¹ X̃ᵀỸ, X̃, Ỹ centred on the fitting samples (the intercept), closed form;
               held-out R²_j = 1 - Σ(y_j - ŷ_j)² / Σ(y_j - ȳ_j)²  per target j (ȳ the held-out mean)
    logistic   multinomial logistic regression (softmax over n_classes; 2 classes: the binary case),
               features standardised on the fitting samples, cross-entropy + λ/2 |W|², minimised by
               a fixed number of L-BFGS steps (optax); held-out accuracy of argmax_c (x W + b)_c
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mi_jax.config import check


def check_targets(features, targets, what: str = "probe target") -> None:
    check(
        np.shape(targets)[0] == np.shape(features)[0],
        f"{what} has {np.shape(targets)[0]} entries but the data has {np.shape(features)[0]} samples",
    )


def split(n: int, test_frac: float = 0.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fixed random split of n samples: (fit indices, held-out indices)."""
    check(0 < test_frac < 1, f"test_frac must be in (0, 1), got {test_frac}")
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(round(n * test_frac)))
    check(n - n_test >= 1, f"{n} samples leave none to fit the probe on")
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def ridge_fit(X: jax.Array, Y: jax.Array, ridge: float = 1e-3) -> tuple[jax.Array, jax.Array]:
    """Ridge regression X [n, d] -> Y [n, t]: (W [d, t], b [t]) with Y ≈ X W + b."""
    x_mean, y_mean = X.mean(0), Y.mean(0)
    Xc, Yc = X - x_mean, Y - y_mean
    gram = Xc.T @ Xc + ridge * X.shape[0] * jnp.eye(X.shape[1], dtype=X.dtype)
    W = jnp.linalg.solve(gram, Xc.T @ Yc)
    return W, y_mean - x_mean @ W


def ridge_r2(X_fit, Y_fit, X_test, Y_test, ridge: float = 1e-3) -> jax.Array:
    """Held-out R² of a ridge probe, per target: [t] (Y [n, t]; a 1-D Y gives a scalar)."""
    flat = Y_fit.ndim == 1
    Y_fit, Y_test = (Y_fit[:, None], Y_test[:, None]) if flat else (Y_fit, Y_test)
    W, b = ridge_fit(X_fit, Y_fit, ridge)
    residual = ((Y_test - X_test @ W - b) ** 2).sum(0)
    total = ((Y_test - Y_test.mean(0)) ** 2).sum(0)
    r2 = 1 - residual / total
    return r2[0] if flat else r2


def logistic_fit(X, y, n_classes: int, l2: float = 1e-3, steps: int = 50) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Multinomial logistic regression by `steps` L-BFGS steps: (W [d, class], b [class], x_mean [d], x_scale [d]).
    Predict with ((x - x_mean) / x_scale) W + b."""
    x_mean, x_scale = X.mean(0), X.std(0) + 1e-6  # standardised: L-BFGS converges in far fewer steps
    Xs = (X - x_mean) / x_scale
    onehot = jax.nn.one_hot(y, n_classes, dtype=Xs.dtype)

    def loss(wb):
        logits = Xs @ wb["W"] + wb["b"]
        return -(onehot * jax.nn.log_softmax(logits)).sum(-1).mean() + 0.5 * l2 * (wb["W"] ** 2).sum()

    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss)

    def step(carry, _):
        wb, state = carry
        value, grad = value_and_grad(wb, state=state)
        updates, state = opt.update(grad, state, wb, value=value, grad=grad, value_fn=loss)
        return (optax.apply_updates(wb, updates), state), None

    wb = {"W": jnp.zeros((X.shape[1], n_classes), Xs.dtype), "b": jnp.zeros((n_classes,), Xs.dtype)}
    (wb, _), _ = jax.lax.scan(step, (wb, opt.init(wb)), None, length=steps)
    return wb["W"], wb["b"], x_mean, x_scale


def logistic_accuracy(X_fit, y_fit, X_test, y_test, n_classes: int, l2: float = 1e-3, steps: int = 50) -> jax.Array:
    """Held-out accuracy of a multinomial logistic probe: scalar."""
    W, b, x_mean, x_scale = logistic_fit(X_fit, y_fit, n_classes, l2, steps)
    predicted = (((X_test - x_mean) / x_scale) @ W + b).argmax(-1)
    return (predicted == y_test).mean(dtype=jnp.float32)
