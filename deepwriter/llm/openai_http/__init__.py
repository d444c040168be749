"""The OpenAI-compatible HTTP backend: generation through /v1/chat/completions and exact target
log-probs through one of three server protocols, against one or several servers (`vllm serve`,
SGLang, a hosted API). By concern: transport.py (balancing, bounded concurrency, retries, the key,
call records), chat.py (generation, prefill, JSON schemas), logprobs.py (the three log-prob protocols).

Scaling and robustness, shared by the generator and the scorer:
- several base URLs, each request sent to the one with the fewest outstanding requests;
- at most `max_concurrency` requests in flight per batch call (an asyncio semaphore);
- retries with exponential backoff and jitter on 429 (Retry-After honoured), 408, 5xx, timeouts,
  dropped connections and truncated, non-JSON or malformed bodies; other 4xx fail at once;
- a sample that still fails comes back marked failed (`Generation.error`, `TokenLogprobs.error`),
  the rest of the batch is unaffected;
- the API key comes from the environment variable named by `api_key_env`, is sent as a Bearer
  token and never appears in a repr or a log line;
- every HTTP call is recorded (URL, status, attempt, latency, token usage) in `.calls`, totals in
  `.usage`.

Structured output: `generate(..., json_schemas=[...])` sends each prompt's JSON schema as OpenAI's
`response_format: {"type": "json_schema", ...}`; vLLM (its structured-output backend), SGLang and
OpenAI decode under it, so the reply is JSON of that schema (a judge uses it for valid verdicts).

Assistant prefill: the final assistant message is sent with vLLM's (also SGLang's)
`continue_final_message=true, add_generation_prompt=false`. A server that rejects those fields with a
400 naming them is asked again without them (and the generator remembers): the trailing assistant
message is then left to the server, which APIs with native prefill continue; if the reply repeats
the prefill, the repeat is cut off.

The sync `generate`/`score` run the async `agenerate`/`ascore` with `asyncio.run`, or in a helper
thread when called from inside a running event loop.
"""

from deepwriter.llm.openai_http.chat import OpenAIGenerator
from deepwriter.llm.openai_http.logprobs import OpenAIScorer
from deepwriter.llm.openai_http.transport import CallRecord, EndpointError, RequestFailed, Usage, run_sync

__all__ = ["CallRecord", "EndpointError", "OpenAIGenerator", "OpenAIScorer", "RequestFailed", "Usage", "run_sync"]
