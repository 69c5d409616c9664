"""Read a checkpoint series trained with TransformerLens (TL) into mi_jax's layout, without torch.

Three layouts (`read_series(path)`):
  (a) one torch.save file in the TL Grokking demo's form, a dict with `config` (a HookedTransformerConfig),
      `checkpoints` (a list of state dicts), `checkpoint_epochs`, `train_losses`, `test_losses` (one per
      epoch), `train_indices`, `test_indices` (pair indices a * p + b) and `model` (the final state dict,
      not read: the series is the checkpoints);
  (b) a directory of per-step torch.save state dicts, the step read from each name (`1000.pth`, `step_1000.pt`);
  (c) a directory of per-step safetensors or npz files with TL key names (what `export_series` writes).

Steps in the demo's file: its loop takes the train loss *before* the optimiser step of epoch e, the
test loss *after* it, and checkpoints after it. mi_jax numbers a snapshot by the optimiser steps taken,
so checkpoint epoch e is step e + 1, and the metrics row of step s pairs train_losses[s] with
test_losses[s - 1] (both losses of the params after s steps); steps 1 .. min(n_train - 1, n_test).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any, Mapping

import jax
import numpy as np

from mi_jax.config import ConfigError, check
from mi_jax.interop import torch_pickle
from mi_jax.interop.transformer_lens import from_tl_state_dict, transformer_config
from mi_jax.models import transformer as tfm

STEP_FILE_SUFFIXES = (".pth", ".pt", ".safetensors", ".npz")
_STATE_DICT_KEYS = ("model", "state_dict", "model_state_dict")  # where a checkpoint dict keeps its state dict


@dataclasses.dataclass(frozen=True)
class ImportedSeries:
    """A TL checkpoint series in mi_jax's layout.

    steps          [time] int64, optimiser steps taken (the file names' numbers for per-step files)
    params         mi_jax's param dict, every leaf [time, ...]
    model          the mi_jax transformer config of the weights
    tl_config      the TL config fields it came from: the files' own, else those the weights' shapes
                   tell, with the caller's overrides
    metrics        rows {"step", "train_loss", "test_loss"}; empty where the file has no loss curves
    train_indices  [n_train], test_indices [n_test]: pair indices a * p + b in the file's order, or None
    source         the file or directory read
    """

    steps: np.ndarray
    params: dict
    model: tfm.TransformerConfig
    tl_config: dict
    metrics: list[dict]
    train_indices: np.ndarray | None
    test_indices: np.ndarray | None
    source: str


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, np.ndarray) for v in obj.values())


def _as_state_dict(obj: Any, source: str) -> dict:
    if _is_state_dict(obj):
        return dict(obj)
    inner = [obj[k] for k in _STATE_DICT_KEYS if isinstance(obj, Mapping) and _is_state_dict(obj.get(k))]
    check(bool(inner), f"{source} is not a TransformerLens state dict or checkpoint series ({_describe(obj)})")
    return dict(inner[0])


def _describe(obj: Any) -> str:
    if isinstance(obj, Mapping):
        return f"a dict with keys {', '.join(map(str, list(obj)[:5]))}"
    return f"a {type(obj).__name__}"


def _plain_config(record: Any, source: str) -> dict:
    check(isinstance(record, Mapping), f"{source}: its 'config' is {_describe(record)}, not a HookedTransformerConfig")
    return {k: str(v) if isinstance(v, torch_pickle.TorchDtype) else v for k, v in record.items()}


def _infer_tl_config(sd: Mapping[str, np.ndarray], source: str) -> dict:
    """The TL config fields that the weights' shapes tell (all but the MLP's activation function)."""
    for key in ("embed.W_E", "pos_embed.W_pos", "blocks.0.attn.W_Q", "unembed.W_U"):
        check(key in sd, f"{source} lacks weight {key}")
    n_heads, d_model, d_head = sd["blocks.0.attn.W_Q"].shape
    fields = {
        "n_layers": len([k for k in sd if re.fullmatch(r"blocks\.\d+\.attn\.W_Q", k)]),
        "d_model": d_model, "n_heads": n_heads, "d_head": d_head, "d_vocab": sd["embed.W_E"].shape[0],
        "d_vocab_out": sd["unembed.W_U"].shape[1], "n_ctx": sd["pos_embed.W_pos"].shape[0],
        "normalization_type": "LN" if "blocks.0.ln1.w" in sd else None,
    }
    w_in, w_out = sd.get("blocks.0.mlp.W_in"), sd.get("blocks.0.mlp.W_out")
    if w_in is not None or w_out is not None:  # either tells d_mlp; the other may be missing
        fields["d_mlp"] = w_in.shape[1] if w_in is not None else w_out.shape[0]
    else:
        fields["attn_only"] = True
    return fields


def _model_config(file_config: dict | None, given: Mapping | None, first: Mapping, source: str):
    """(TL config fields, mi_jax config): the file's config, or the shapes', overridden by `given`."""
    fields = dict(file_config) if file_config is not None else _infer_tl_config(first, source)
    fields.update(given or {})
    check(
        file_config is not None or fields.get("attn_only") or "act_fn" in fields,
        f"{source} carries no TransformerLens config and the MLP's act_fn is not in the weights: "
        "pass tl_config={'act_fn': ...}",
    )
    return fields, transformer_config(fields)


def _stack(state_dicts: list[Mapping], cfg: tfm.TransformerConfig, sources: list[str]) -> dict:
    trees = [from_tl_state_dict(sd, cfg, src) for sd, src in zip(state_dicts, sources)]
    return jax.tree.map(lambda *xs: np.stack(xs), *trees)


def _demo_metrics(train_losses, test_losses) -> list[dict]:
    train, test = list(train_losses or []), list(test_losses or [])
    return [
        {"step": s, "train_loss": float(train[s]), "test_loss": float(test[s - 1])}
        for s in range(1, min(len(train) - 1, len(test)) + 1)
    ]


def _indices(value, name: str, source: str) -> np.ndarray | None:
    if value is None:
        return None
    out = np.asarray(value)
    check(out.ndim == 1 and out.dtype.kind in "iu", f"{source}: {name} is not a list of pair indices")
    return out.astype(np.int64)


def _read_demo(obj: Mapping, tl_config: Mapping | None, source: str) -> ImportedSeries:
    checkpoints, epochs = obj["checkpoints"], obj.get("checkpoint_epochs")
    check(
        isinstance(checkpoints, list) and checkpoints, f"{source}: 'checkpoints' is not a non-empty list of state dicts"
    )
    check(
        epochs is not None and len(epochs) == len(checkpoints),
        f"{source}: 'checkpoint_epochs' does not give one epoch per checkpoint",
    )
    sources = [f"{source} (checkpoint at epoch {e})" for e in epochs]
    state_dicts = [_as_state_dict(c, s) for c, s in zip(checkpoints, sources)]
    file_config = _plain_config(obj["config"], source) if obj.get("config") is not None else None
    fields, cfg = _model_config(file_config, tl_config, state_dicts[0], source)
    return ImportedSeries(
        steps=np.asarray(epochs, np.int64) + 1, params=_stack(state_dicts, cfg, sources), model=cfg,
        tl_config=fields, metrics=_demo_metrics(obj.get("train_losses"), obj.get("test_losses")),
        train_indices=_indices(obj.get("train_indices"), "train_indices", source),
        test_indices=_indices(obj.get("test_indices"), "test_indices", source), source=source,
    )


def _step_of(path: Path) -> int:
    numbers = re.findall(r"\d+", path.stem)
    check(bool(numbers), f"cannot tell the step of {path} from its name (expected e.g. 1000.pth or step_1000.pt)")
    return int(numbers[-1])


def _read_step_file(path: Path) -> tuple[dict, dict | None]:
    """-> (TL state dict, TL config fields from the file's metadata or None)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="numpy") as f:
                metadata = f.metadata() or {}
                state_dict = {k: f.get_tensor(k) for k in f.keys()}
            config = json.loads(metadata["tl_config"]) if "tl_config" in metadata else None
            return state_dict, config
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}, None
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - a corrupt or foreign file is one error to the user
        raise ConfigError(f"cannot read {path} as {path.suffix[1:]}: {type(e).__name__}: {e}") from None
    return _as_state_dict(torch_pickle.load(path), str(path)), None


def _read_directory(directory: Path, tl_config: Mapping | None) -> ImportedSeries:
    files = sorted(p for p in directory.iterdir() if p.suffix in STEP_FILE_SUFFIXES and p.is_file())
    patterns = ", ".join("*" + s for s in STEP_FILE_SUFFIXES)
    check(bool(files), f"{directory} holds no per-step checkpoint files ({patterns})")
    by_step: dict[int, Path] = {}
    for path in files:
        step = _step_of(path)
        check(step not in by_step, f"{directory}: {by_step.get(step)} and {path} both hold step {step}")
        by_step[step] = path
    steps = sorted(by_step)
    read = [_read_step_file(by_step[s]) for s in steps]
    file_config = next((config for _, config in read if config is not None), None)
    fields, cfg = _model_config(file_config, tl_config, read[0][0], str(directory))
    params = _stack([sd for sd, _ in read], cfg, [str(by_step[s]) for s in steps])
    return ImportedSeries(
        steps=np.asarray(steps, np.int64), params=params, model=cfg, tl_config=fields, metrics=[],
        train_indices=None, test_indices=None, source=str(directory),
    )


def read_series(path: str | Path, tl_config: Mapping | None = None) -> ImportedSeries:
    """Read a TL checkpoint series (a demo file, or a directory of per-step files) into mi_jax's layout.

    `tl_config`: TL config fields that override (or, where the files carry no config, complete)
    what the files say, e.g. `{"act_fn": "relu"}` for a directory of bare state dicts.
    Every bad input is one ConfigError line naming the file.
    """
    path = Path(path)
    check(path.exists(), f"no such file or directory: {path}")
    if path.is_dir():
        return _read_directory(path, tl_config)
    if path.suffix in (".safetensors", ".npz"):
        sd, config = _read_step_file(path)
    else:
        obj = torch_pickle.load(path)
        if isinstance(obj, Mapping) and "checkpoints" in obj:
            return _read_demo(obj, tl_config, str(path))
        sd, config = _as_state_dict(obj, str(path)), None
    fields, cfg = _model_config(config, tl_config, sd, str(path))
    step = _step_of(path) if re.search(r"\d", path.stem) else 0
    return ImportedSeries(
        steps=np.asarray([step], np.int64), params=_stack([sd], cfg, [str(path)]), model=cfg, tl_config=fields,
        metrics=[], train_indices=None, test_indices=None, source=str(path),
    )
