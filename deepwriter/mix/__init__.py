"""The mix stage: synthetic trajectories and public reasoning data, deduplicated, decontaminated
against the benchmarks, filtered and written as the SFT dataset with its data card."""
