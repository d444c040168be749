"""(request, answer) pairs for the synthesize stage: reading pair files and other source kinds
(scored responses, long texts), and preparing them (category labels, quotas, reverse queries)."""
