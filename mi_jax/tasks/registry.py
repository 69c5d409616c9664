"""The registry of experiment kinds: a kind's name -> its config class and its task class.

Every kind gets in the same way, built-in or not: `register(ConfigClass, TaskClass)` (or
`mj.register_kind`, which also takes a report). The config class is a frozen dataclass with a
class variable `kind` (its name) and a field `train: TrainConfig`; the task class is made from a
config and supplies the pure functions the training loop runs (`mi_jax.training.loop`):

    init_params(key) -> params
    batch(key, step) -> batch            jittable; the data order is a function of (seed, step)
    loss(params, batch) -> scalar        a mean over the batch's leading axis
    evaluate(params) -> {name: scalar}   the metrics of an evaluation (test loss, accuracy, ...)
  and may supply
    frozen(path) -> bool                 parameters the optimiser leaves alone (default: none)
    llc_data(n_examples) -> data         the fixed training set of `mi-jax llc` (leaves [example, ...])
    LLC_SETTINGS = {"llc.epsilon": ...}  that command's settings for this kind (dotted keys)
    MEMBER_KEYS, member_data(cfg)        config keys the members of one sweep program may differ in
    run_files() -> {name: text}          files a new run dir keeps beside config.json (a tokenizer, ...)
    check_base(base_dir, what)           one ConfigError line if a run to fine-tune from does not fit
                                         beyond its params' shapes (`what` names it)
    shared_data = {name: array}          host arrays every member's batches read (a corpus): then
                                         batch(key, step, shared) gets them as device arrays, passed
                                         to the compiled chunk rather than compiled into it
    hooked_loss(params, batch, hooks)    the loss with extra hooks {name: fn(activation) -> activation}
                                         in the forward pass; with sae_hook_points() -> (name, ...), the
                                         points whose activation is a vector per example, [..., d] (the
                                         first is the default), `mi-jax sae` reads and splices there
    INSTANCE_AXES = 0                    leading axes of activations and hooked losses that are separate
                                         models (TMS's [instance]): an SAE for each
    true_features(params, hook)          the directions [..., n, d] the activations at `hook` are made of
                                         (a toy model's ground truth), for the SAE's recovery score

A run's config.json names its kind; a kind from outside mi_jax also records where it comes from
(`"kind_source": {"module": ..., "file": ...}`), so that loading the run finds it again: a kind not
registered yet is looked up by importing that module (or, failing that, loading that file), then
among the packages' entry points of group `mi_jax.kinds` (`name = "package.module"`, a module whose
import registers the kind).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import importlib.util
import sys
from pathlib import Path

from mi_jax import config as config_lib
from mi_jax.config import ConfigError, check

ENTRY_POINTS = "mi_jax.kinds"
TASK_FUNCTIONS = ("init_params", "batch", "loss", "evaluate")
# the names run dirs written before the kinds had one name everywhere still carry
OLD_NAMES = {"modular": "grokking", "tms": "superposition", "and": "boolean_and"}


@dataclasses.dataclass(frozen=True)
class Kind:
    """An experiment kind: its name, config class and task class, and the module that defines them
    (`file`: that module's file, for one that may not be importable by name, like a preset file)."""

    name: str
    config: type
    task: type
    module: str
    file: str | None = None

    @property
    def built_in(self) -> bool:
        return self.module == "mi_jax" or self.module.startswith("mi_jax.")

    @property
    def source(self) -> dict | None:
        """What config.json records to find the kind again (None for a built-in kind)."""
        if self.built_in:
            return None
        return {"module": self.module, **({"file": self.file} if self.file else {})}


KINDS: dict[str, Kind] = {}


def _check_kind(config: type, task: type) -> str:
    name = getattr(config, "kind", None)
    check(isinstance(name, str) and name.isidentifier(),
          f"{config.__name__} needs a class variable `kind`, a name such as \"sparse_parity\"")
    check(dataclasses.is_dataclass(config), f"the config class of kind {name!r} must be a dataclass")
    check("train" in {f.name for f in dataclasses.fields(config)},
          f"{config.__name__} (kind {name!r}) needs a field `train: TrainConfig`")
    missing = [f for f in TASK_FUNCTIONS if not callable(getattr(task, f, None))]
    check(not missing, f"the task class of kind {name!r} lacks {', '.join(missing)}")
    return name


def register(config: type, task: type) -> Kind:
    """Register a kind: `config` (a frozen dataclass with `kind` and `train`) and `task` (made from a
    config; see the module doc). Registering the same classes again, or a module's new run of itself
    (a re-run notebook cell), replaces the entry; another module's kind of the same name is refused."""
    name = _check_kind(config, task)
    module = config.__module__
    file = getattr(sys.modules.get(module), "__file__", None)
    old = KINDS.get(name)
    check(old is None or (old.module, old.config.__qualname__) == (module, config.__qualname__),
          f"kind {name!r} is already registered by {old and old.module}; give yours another name")
    KINDS[name] = Kind(name, config, task, module, str(Path(file).resolve()) if file else None)
    return KINDS[name]


def _import_source(name: str, source: dict) -> str | None:
    """Import the module a run recorded for kind `name` (else load its file); -> why not, or None."""
    module, file = source.get("module"), source.get("file")
    why = None
    if module and module != "__main__":
        try:
            importlib.import_module(module)
            return None
        except Exception as e:  # noqa: BLE001 - any failure to import is reported in the one line
            why = f"module {module!r} cannot be imported ({type(e).__name__}: {e})"
    if file and Path(file).is_file():
        spec = importlib.util.spec_from_file_location(f"mi_jax_kind_{name}", file)
        loaded = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(loaded)
            return None
        except Exception as e:  # noqa: BLE001
            return f"{file} fails to load ({type(e).__name__}: {e})"
    return why or f"it was defined in {file or module!r}, which is gone"


def _import_entry_point(name: str) -> None:
    for entry in importlib.metadata.entry_points(group=ENTRY_POINTS):
        if entry.name == name:
            entry.load()
            return


def find_kind(name: str | None, source: dict | None = None) -> Kind:
    """The kind called `name` (an older name of it too), found as the module doc says; one ConfigError
    line when it cannot be."""
    name = OLD_NAMES.get(name, name)
    why = None
    if name not in KINDS and source:
        why = _import_source(name, source)
    if name not in KINDS:
        _import_entry_point(name)
    if name not in KINDS:
        where = f": {why}" if why else (
            f" (known: {', '.join(sorted(KINDS))}; register a kind of your own with mj.register_kind, "
            f"from an importable module or an entry point of group {ENTRY_POINTS!r})")
        raise ConfigError(f"unknown experiment kind {name!r}{where}")
    return KINDS[name]


def kind_of(cfg) -> Kind:
    """The registered kind of a config object."""
    name = type(cfg).kind
    kind = KINDS.get(OLD_NAMES.get(name, name))
    check(kind is not None, f"kind {name!r} is not registered: call mj.register_kind({type(cfg).__name__}, "
                            "YourTask) in the module that defines it")
    return kind


def make_task(cfg):
    """The task (pure training functions) of a config; validates task-level settings."""
    return kind_of(cfg).task(cfg)


def config_dict(cfg) -> dict:
    """The config as config.json holds it: its kind, where a kind from outside mi_jax comes from, its fields."""
    data = config_lib.to_dict(cfg)
    source = kind_of(cfg).source
    return {"kind": data.pop("kind"), **({"kind_source": source} if source else {}), **data}


def config_from_dict(data: dict):
    """The config object a config.json dict describes (its kind picks, and if needed finds, the class)."""
    kind = find_kind(data.get("kind"), data.get("kind_source"))
    return config_lib.from_dict(kind.config, data)

