"""The logic of the user commands, each module named as its entry point (deepwriter/<command>.py):
plan.py (`deepwriter.plan`), report.py, prompts.py, export.py, serve.py, dashboard.py, ablations.py.
The run itself (`deepwriter.train`) is deepwriter.pipeline."""
