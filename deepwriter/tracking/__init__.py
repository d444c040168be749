"""W&B for every stage (runs.py): the floor just above the config, so stages and the runner log alike."""
