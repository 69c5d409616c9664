"""Reading and writing, at the edges of the numerics: the run dir (`store`: snapshots, train state,
metrics; `snapshots`: the series as zarr arrays, read lazily; `lock`: one writer), the checkpoint
series as one object (`trajectory`), analysis results (`results`: npz and summary JSON) and wandb
logging (`wandb_logger`)."""
