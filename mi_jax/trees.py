"""Names of the leaves of a parameter tree: `blocks.0.attn.W_Q`, the name a leaf has on disk
(one snapshot array each), in TransformerLens state dicts and in the messages that name it."""

from __future__ import annotations

import jax
import numpy as np


def leaf_name(path: tuple) -> str:
    """`("blocks", 0, "attn", "W_Q")` (a tree path of dict keys and sequence indices) -> `"blocks.0.attn.W_Q"`."""
    return ".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def flatten(tree) -> dict[str, np.ndarray]:
    """A nested dict of arrays -> {leaf name: leaf}."""
    return {leaf_name(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def unflatten(flat: dict[str, np.ndarray]) -> dict:
    """Inverse of `flatten` for nested dicts (integer keys come back as ints)."""
    out: dict = {}
    for name, value in flat.items():
        node = out
        *parents, last = [int(p) if p.isdigit() else p for p in name.split(".")]
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out
