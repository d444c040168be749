"""SLURM: the scheduler client and a managed replica as a job of its own (jobs.py), what each job asks
the scheduler for (requests.py), and the recipe as one job per stage (launcher.py, launcher=slurm)."""
