"""The models: the hooked transformer (`transformer`, its CPU fast paths in `_fast`) and the toy models of superposition (`toy`)."""
