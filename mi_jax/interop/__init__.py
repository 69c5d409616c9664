"""To and from TransformerLens, without TL or torch: its state dicts and configs (`transformer_lens`),
a series of its checkpoints read from disk (`tl_series`, through `torch_pickle`'s safe reader of
torch's zip pickles), and such a series written as a mi_jax run dir (`tl_import`)."""
