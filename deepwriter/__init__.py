"""deepwriter: REverse-Engineered Reasoning for open-ended writing."""

__version__ = "0.1.0"
