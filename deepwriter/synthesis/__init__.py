"""REER synthesis: reverse-engineer a deep thinking trajectory z for each (request x, answer y) pair
by a perplexity-guided, segment-by-segment search (search.py), and write the records as append-only
JSONL shards (store.py) from the `synthesize` stage (stage.py)."""
