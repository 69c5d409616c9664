"""Pure measures of one model, and `analyze`, which maps them over a whole checkpoint series."""
