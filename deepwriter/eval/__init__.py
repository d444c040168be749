"""Evaluation: benchmarks (LongBench-Write, HelloBench, WritingBench) with their authors' scoring,
generation by the model under test, an LLM judge with a disk cache, tables and plots.

Entry points: `deepwriter.eval.stage.run` (the pipeline stage),
`deepwriter.eval.benchmarks.benchmark_prompts` (decontamination), `python -m deepwriter.eval.rescore`.
"""
