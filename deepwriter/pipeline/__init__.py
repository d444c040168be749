"""Runs a recipe: runner.py (stage order, content-keyed reuse, manifests),
summary.py (the closing summary), and the logic behind the user commands: cost.py (`deepwriter.plan`),
prompt_preview.py (`deepwriter.prompts`), publish.py (`deepwriter.export`), dashboard.py
(`deepwriter.dashboard`), ablations.py (`deepwriter.ablations`).
"""
