"""Runs: the run directory's life cycle above the tasks. `run` trains a config into a run dir and resumes
it, `sweep` trains a grid of settings as few programs as shapes allow, `trajectory` loads a run dir's
checkpoint series as the one object every analysis reads."""
