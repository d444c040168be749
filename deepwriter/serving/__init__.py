"""A run's own servers: where each model's replicas go (placement.py), the vLLM command a preset becomes
(server.py), starting, health-checking, healing and stopping the replicas (fleet.py), and the servers
around the run's stages (stages.py). A replica that is a SLURM job of its own is spawned by
deepwriter.cluster, the floor above."""
