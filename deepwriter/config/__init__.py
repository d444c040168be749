"""The typed config: one dataclass schema per group, each default written once (here; the YAML under
deepwriter/conf/ only where a scale or recipe changes it). root.py composes them into RootConfig and
turns a Hydra config into it, checking declared ranges and choices before any work.
"""
