"""The `data` config group's schema (config.py) and the embedded demo data (demo/); the code that
reads pairs lives in deepwriter.pairs, the mix stage in deepwriter.mix."""
