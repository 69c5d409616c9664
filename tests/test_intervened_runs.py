"""A run trained with `train.interventions` is measured as it trained: the induction measures apply them."""

import dataclasses

import jax
import numpy as np

import mi_jax as mj
from mi_jax.analysis import induction as ind
from mi_jax.models import transformer as tfm


def test_induction_measures_of_a_run_trained_with_a_head_ablated_see_that_head_ablated():
    cfg = mj.InductionConfig(
        seq_len=16, d_vocab=16, repeat_len=6, min_repeat_len=3, n_eval=16,
        model=mj.TransformerConfig(n_layers=2, d_model=16, n_heads=2, d_mlp=None, layer_norm=True),
        train=mj.TrainConfig(steps=100, batch_size=16),
    )
    ablated = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, interventions=("ablate_head:0.1",)))
    params = tfm.init_params(cfg.transformer, jax.random.key(0))
    data = ind.probe_data(cfg, n=8)
    plain = {k: v for f in ind.make_measures(cfg).values() for k, v in f(params, data).items()}
    hooked = {k: v for f in ind.make_measures(ablated).values() for k, v in f(params, data).items()}
    assert float(hooked["direct_logit"][0, 1]) == 0.0 != float(plain["direct_logit"][0, 1])
    np.testing.assert_allclose(hooked["previous_token"][0], plain["previous_token"][0])  # layer 0 reads the same input
    assert not np.allclose(hooked["previous_token"][1], plain["previous_token"][1])  # layer 1 reads L0H1's absence
    assert float(hooked["icl_score"]) != float(plain["icl_score"])
