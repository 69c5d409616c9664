"""TransformerLens (TL) state dicts and configs <-> mi_jax params and `TransformerConfig`, without TL or torch.

A TL state-dict key is mi_jax's flat parameter name (`mi_jax.trees.flatten`) with the four
top-level weights renamed; shapes are the same on both sides (mi_jax's transformer keeps TL's layout):

    embed.W_E <-> W_E     pos_embed.W_pos <-> W_pos     unembed.W_U <-> W_U     unembed.b_U <-> b_U
    blocks.{l}.attn.*, blocks.{l}.mlp.*, blocks.{l}.ln1.*, blocks.{l}.ln2.*, ln_final.*: the same name

TL's state dict also holds two buffers per layer, blocks.{l}.attn.mask [n_ctx, n_ctx] (bool, causal)
and blocks.{l}.attn.IGNORE [] (-inf): skipped on import, written on export so that TL's
`HookedTransformer.load_state_dict(state_dict)` (strict) accepts an export.

Config: the fields of TL's `HookedTransformerConfig` (a dict) <-> mi_jax's `TransformerConfig`. A TL
feature mi_jax's transformer lacks (rotary or other positions, LNPre/RMS norms, parallel attention
and MLP, grouped-query attention, an attention scale other than sqrt(d_head), ...) is named in one
line (ConfigError), never dropped silently.

Export writes safetensors files (TL key names, the TL config fields as JSON in the file's metadata
under "tl_config"), which `read_series` in mi_jax/interop/tl_series.py reads back bit for bit.
"""

from __future__ import annotations

import functools
import json
import math
import re
from pathlib import Path
from typing import Mapping

import jax
import numpy as np

from mi_jax.config import check
from mi_jax.models import transformer as tfm
from mi_jax.trees import flatten, unflatten

_TOP_LEVEL = {"W_E": "embed.W_E", "W_pos": "pos_embed.W_pos", "W_U": "unembed.W_U", "b_U": "unembed.b_U"}
_BUFFER = re.compile(r"blocks\.\d+\.attn\.(mask|IGNORE)$")
# TL activation names -> mi_jax's (gelu_new, gelu_fast and gelu_pytorch_tanh are all the tanh gelu)
_ACT_FNS = {"relu": "relu", "silu": "silu", "gelu_new": "gelu", "gelu_fast": "gelu", "gelu_pytorch_tanh": "gelu"}
_ACT_FNS_OUT = {"relu": "relu", "silu": "silu", "gelu": "gelu_new"}
# TL switches that change the forward pass and that mi_jax's transformer does not have: field -> its off value
_OFF = {
    "parallel_attn_mlp": False, "gated_mlp": False, "use_local_attn": False, "final_rms": False,
    "post_embedding_ln": False, "scale_attn_by_inverse_layer_idx": False, "use_qk_norm": False,
    "use_normalization_before_and_after": False, "num_experts": None, "use_NTK_by_parts_rope": False,
}
LN_EPS = 1e-5  # mi_jax's layer norm epsilon (TL's default)


def tl_key(name: str) -> str:
    """mi_jax flat param name -> TL state-dict key (`"W_E"` -> `"embed.W_E"`, blocks.* unchanged)."""
    return _TOP_LEVEL.get(name, name)


# ----------------------------------------------------------------------------- config


def _unsupported_features(tl: Mapping) -> list[str]:
    """`field=value` for every TL setting in `tl` that mi_jax's transformer cannot run as TL would."""
    found = [f"{k}={tl[k]!r}" for k, off in _OFF.items() if k in tl and tl[k] not in (off, None)]
    if tl.get("positional_embedding_type", "standard") not in ("standard", "shortformer"):
        found.append(f"positional_embedding_type={tl['positional_embedding_type']!r}")
    norm = tl.get("normalization_type", "LN")
    if norm not in (None, "LN"):
        found.append(f"normalization_type={norm!r}")
    if norm == "LN" and not math.isclose(tl.get("eps", LN_EPS), LN_EPS, rel_tol=1e-9):
        found.append(f"eps={tl['eps']!r} (mi_jax's layer norm uses {LN_EPS})")
    if tl.get("attention_dir", "causal") != "causal":
        found.append(f"attention_dir={tl['attention_dir']!r}")
    if tl.get("attn_types") and any(t != "global" for t in tl["attn_types"]):
        found.append(f"attn_types={tl['attn_types']!r}")
    kv_heads = tl.get("n_key_value_heads")
    if kv_heads is not None and kv_heads != tl.get("n_heads"):
        found.append(f"n_key_value_heads={kv_heads!r} (grouped-query attention)")
    scale, d_head = tl.get("attn_scale", -1.0), tl.get("d_head")
    if not tl.get("use_attn_scale", True):
        found.append("use_attn_scale=False")
    elif scale not in (-1, None) and d_head and not math.isclose(scale, math.sqrt(d_head), rel_tol=1e-6):
        found.append(f"attn_scale={scale!r} (mi_jax divides by sqrt(d_head) = {math.sqrt(d_head):.6g})")
    for cap in ("attn_scores_soft_cap", "output_logits_soft_cap"):
        if (tl.get(cap) or -1) > 0:
            found.append(f"{cap}={tl[cap]!r}")
    if not tl.get("attn_only", False) and tl.get("act_fn") not in _ACT_FNS:
        extra = " (exact erf gelu; mi_jax's gelu is TL's gelu_new)" if tl.get("act_fn") == "gelu" else ""
        found.append(f"act_fn={tl.get('act_fn')!r}{extra}")
    return found


def transformer_config(tl: Mapping) -> tfm.TransformerConfig:
    """TL `HookedTransformerConfig` fields (a dict) -> mi_jax `TransformerConfig`.

    Raises ConfigError naming, in one line, each TL feature mi_jax's transformer lacks.
    """
    missing = [k for k in ("n_layers", "d_model", "n_ctx", "d_head", "d_vocab") if tl.get(k) in (None, -1)]
    check(not missing, f"the TransformerLens config lacks {', '.join(missing)}")
    unsupported = _unsupported_features(tl)
    check(not unsupported, f"TransformerLens features mi_jax's transformer lacks: {', '.join(unsupported)}")
    d_model, d_head = int(tl["d_model"]), int(tl["d_head"])
    n_heads = int(tl.get("n_heads", -1))
    n_heads = d_model // d_head if n_heads == -1 else n_heads  # TL's own default
    attn_only = bool(tl.get("attn_only", False))
    d_mlp = tl.get("d_mlp") or 4 * d_model  # TL's default d_mlp
    d_vocab_out = int(tl.get("d_vocab_out", -1))
    std = tl.get("initializer_range")
    default_std = 0.8 / math.sqrt(d_model)
    return tfm.TransformerConfig(
        n_layers=int(tl["n_layers"]), d_model=d_model, n_heads=n_heads, d_head=d_head,
        d_mlp=None if attn_only else int(d_mlp), act_fn=_ACT_FNS.get(tl.get("act_fn"), "relu"),
        layer_norm=tl.get("normalization_type", "LN") == "LN", n_ctx=int(tl["n_ctx"]), d_vocab=int(tl["d_vocab"]),
        d_vocab_out=int(tl["d_vocab"]) if d_vocab_out == -1 else d_vocab_out, positional_embedding="shortformer" if tl.get("positional_embedding_type") == "shortformer" else "learned",
        init_std=None if std is None or std < 0 or math.isclose(std, default_std, rel_tol=1e-9) else float(std),
    )


def tl_config_fields(cfg: tfm.TransformerConfig) -> dict:
    """mi_jax `TransformerConfig` -> keyword arguments of TL's `HookedTransformerConfig` for the same model."""
    cfg.require_complete()
    return {
        "n_layers": cfg.n_layers, "d_model": cfg.d_model, "n_ctx": cfg.n_ctx, "d_head": cfg.d_head,
        "n_heads": cfg.n_heads, "d_mlp": cfg.d_mlp, "attn_only": cfg.d_mlp is None,
        "act_fn": _ACT_FNS_OUT[cfg.act_fn], "d_vocab": cfg.d_vocab, "d_vocab_out": cfg.d_vocab_out,
        "normalization_type": "LN" if cfg.layer_norm else None, "eps": LN_EPS,
        "positional_embedding_type": "shortformer" if cfg.positional_embedding == "shortformer" else "standard",
        "initializer_range": cfg.std,
    }


# ----------------------------------------------------------------------------- state dicts


@functools.lru_cache(maxsize=32)
def expected_shapes(cfg: tfm.TransformerConfig) -> dict[str, tuple[int, ...]]:
    """mi_jax flat param name -> shape, for a model of this config (read off the model, not restated)."""
    cfg.require_complete()
    abstract = jax.eval_shape(lambda key: tfm.init_params(cfg, key), jax.random.key(0))
    return {name: tuple(leaf.shape) for name, leaf in flatten(abstract).items()}


def from_tl_state_dict(
    state_dict: Mapping[str, np.ndarray], cfg: tfm.TransformerConfig, source: str = "state dict"
) -> dict:
    """TL state dict -> mi_jax params (nested dict of numpy arrays, dtypes as stored).

    Buffers (attn.mask, attn.IGNORE) are skipped; a missing weight, a weight mi_jax has no place
    for, or a shape that disagrees with `cfg` is one ConfigError line naming `source`.
    """
    expected = expected_shapes(cfg)
    names = {tl_key(name): name for name in expected}
    extra = sorted(k for k in state_dict if k not in names and not _BUFFER.match(k))
    check(not extra, f"{source} holds {extra[:1]}, which a mi_jax transformer of this config does not have")
    flat = {}
    for key, name in names.items():
        check(key in state_dict, f"{source} lacks weight {key} (shape {expected[name]} for this config)")
        value = np.asarray(state_dict[key])
        want = expected[name]
        check(value.shape == want, f"{source}: {key} has shape {value.shape}, the config gives {want}")
        flat[name] = value
    return unflatten(flat)


def to_tl_state_dict(params: dict, cfg: tfm.TransformerConfig) -> dict[str, np.ndarray]:
    """mi_jax params (one checkpoint) -> TL state dict, buffers included.

    A model without positional embedding (`positional_embedding="none"`) gets W_pos = 0, which TL
    runs the same way (TL always has one).
    """
    expected = expected_shapes(cfg)
    flat = flatten(params)
    odd = sorted(set(flat) ^ set(expected))
    check(not odd, f"params and this config disagree on {odd[:1]} (present in one, not the other)")
    out = {}
    for name, shape in expected.items():
        value = np.asarray(flat[name])
        check(value.shape == shape, f"params: {name} has shape {value.shape}, the config gives {shape}")
        out[tl_key(name)] = value
    if "W_pos" not in expected:
        out["pos_embed.W_pos"] = np.zeros((cfg.n_ctx, cfg.d_model), out["embed.W_E"].dtype)
    for layer in range(cfg.n_layers):
        out[f"blocks.{layer}.attn.mask"] = np.tril(np.ones((cfg.n_ctx, cfg.n_ctx), bool))
        out[f"blocks.{layer}.attn.IGNORE"] = np.array(-np.inf, np.float32)
    return out


# ----------------------------------------------------------------------------- export


def save_safetensors(params: dict, cfg: tfm.TransformerConfig, path: str | Path, step: int | None = None) -> Path:
    """Write one checkpoint as a TL state dict in safetensors, the TL config as JSON metadata."""
    from safetensors.numpy import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: np.ascontiguousarray(v) for k, v in to_tl_state_dict(params, cfg).items()}
    metadata = {"format": "pt", "tl_config": json.dumps(tl_config_fields(cfg))}  # "pt": what TL users' loaders expect
    if step is not None:
        metadata["step"] = str(int(step))
    save_file(tensors, str(path), metadata=metadata)
    return path


def export_series(steps, params: dict, cfg: tfm.TransformerConfig, out_dir: str | Path) -> list[Path]:
    """Write a stacked series (steps [time], params leaves [time, ...]) as OUT_DIR/{step}.safetensors."""
    steps = np.asarray(steps)
    lengths = {np.shape(leaf)[0] for leaf in jax.tree.leaves(params)}
    check(lengths == {len(steps)}, f"params have {sorted(lengths)} checkpoints along time, steps lists {len(steps)}")
    paths = []
    for i, step in enumerate(steps):
        one = jax.tree.map(lambda x, i=i: np.asarray(x[i]), params)
        paths.append(save_safetensors(one, cfg, Path(out_dir) / f"{int(step)}.safetensors", step))
    return paths


def export_trajectory(traj, out_dir: str | Path, member: int = 0) -> list[Path]:
    """Every checkpoint of one member of a mi_jax run (a `Trajectory`) as TL safetensors files."""
    kind = getattr(type(traj.config), "kind", type(traj.config).__name__)
    check(hasattr(traj.config, "transformer"), f"a {kind} run has no transformer to export to TransformerLens")
    check(0 <= member < traj.n_members, f"member {member} is out of range: the run has {traj.n_members} member(s)")
    params = jax.tree.map(lambda x: x[:, member], traj.params)
    return export_series(traj.steps, params, traj.config.transformer, out_dir)
