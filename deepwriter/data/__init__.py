"""Data sources, the demo data and the training mix (the mix stage)."""
