"""Tasks: the data and objective of each experiment kind, as pure functions for training, and the
registry of kinds (`registry`: name -> config class and task class), which the built-in kinds join
here as every other kind does.

    grokking        modular arithmetic a op b mod p (Nanda et al. 2023)
    induction       in-context sequences that only induction heads predict (Olsson et al. 2022)
    superposition   toy models of superposition (Elhage et al. 2022)
    boolean_and     computation in superposition: pairwise ANDs of sparse features
    language        next-token prediction on real text (the standard library's source by default)
"""

from __future__ import annotations

from mi_jax.tasks.boolean_and import BooleanAndConfig, BooleanAndTask
from mi_jax.tasks.grokking import GrokkingConfig, GrokkingTask
from mi_jax.tasks.induction import InductionConfig, InductionTask
from mi_jax.tasks.language import LanguageConfig, LanguageTask
from mi_jax.tasks.registry import KINDS, Kind, config_dict, config_from_dict, find_kind, kind_of, make_task, register
from mi_jax.tasks.superposition import SuperpositionConfig, SuperpositionTask

BUILT_IN = {
    "grokking": (GrokkingConfig, GrokkingTask),
    "induction": (InductionConfig, InductionTask),
    "superposition": (SuperpositionConfig, SuperpositionTask),
    "boolean_and": (BooleanAndConfig, BooleanAndTask),
    "language": (LanguageConfig, LanguageTask),
}
for _config, _task in BUILT_IN.values():
    register(_config, _task)

__all__ = ["BUILT_IN", "KINDS", "Kind", "config_dict", "config_from_dict", "find_kind", "kind_of", "make_task",
           "register"]
