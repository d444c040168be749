"""Evaluation: benchmarks (LongBench-Write, HelloBench, WritingBench) with their authors' scoring,
generation by the model under test, an LLM judge with a disk cache, tables and plots.

Entry points: `deepwriter.eval.stage.run` (the pipeline stage),
`deepwriter.eval.benchmarks.benchmark_prompts` (decontamination),
`python -m deepwriter.eval.benchmarks.hellobench_rescore` (HelloBench's published judgments scored again),
`deepwriter.eval.preview.judge_prompts` (what the judge would be sent for one item),
`python -m deepwriter.eval.published` (intervals of published judgments). How sure a figure is:
`deepwriter.eval.stats` (bootstrap intervals, paired differences and permutation tests),
`deepwriter.eval.paired_runs` (two runs' eval folders compared item by item),
`deepwriter.eval.agreement` (Krippendorff's α of judge samples).

Each benchmark's judge is asked as its authors' evaluation code asks (prompt structure, system prompt,
sampling, HelloBench's answer cut), with every setting under eval.benchmarks.<name>.judge; the
reference values and their sources are in each benchmark module's REFERENCE_JUDGE.
"""
