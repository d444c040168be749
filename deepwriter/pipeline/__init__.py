"""Runs a recipe: runner.py (stage order, content-keyed reuse, manifests, the run's servers around its
stages, launcher=slurm's checks before submission) and summary.py (the closing summary)."""
