"""What the tests and the benchmarks share: the fault-injecting loopback OpenAI server, the real-vLLM
server fixture, synthetic SFT data, the headless-browser helpers and small config/run helpers.
Not used by the product's own code paths.
"""
