"""The training engine, below the tasks (any object with `init_params`, `batch`, `loss` and `evaluate`
trains): the train config (`config`), the optimiser (`optimizer`), the compiled chunk of steps
(`chunk`) and the loop around it (`loop`), where a run computes (`devices`), when it snapshots and
evaluates (`schedule`), splitting batches over devices (`parallel`), several processes (`distributed`)
and the progress bar (`progress`). The run dir's life cycle above the tasks is `mi_jax.runs`."""
