"""The HTTP transport of the OpenAI-compatible backend: base URLs and balancing (fewest outstanding
requests), bounded concurrency, retries with backoff and Retry-After, the API key, the call records."""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import random
import re
import ssl
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, List, Optional, Sequence, TypeVar

import httpx

from deepwriter.config.llm import EndpointConfig
from deepwriter.core.errors import ConfigError, DeepwriterError

log = logging.getLogger("deepwriter.llm.http")

T = TypeVar("T")
_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
# Answers that every further request to this endpoint would get too (a missing or wrong key, no such
# model or route): the work stops at the first one instead of spending every item's retries on it.
_REFUSED_STATUS = {401, 403, 404}
# How servers word a request that does not fit the model's context (vLLM: "This model's maximum context
# length is N tokens ..."; OpenAI: "context_length_exceeded"; SGLang: "... is longer than the model's
# context length").
_OVER_CONTEXT = re.compile(r"context[ _]length|max_model_len|maximum model length|too long to fit", re.IGNORECASE)
_MAX_BACKOFF_S = 60.0


class EndpointError(ConfigError):
    """A mistake in the endpoint configuration or environment (not a transient server failure)."""


class RequestFailed(Exception):
    """One request gave up: a non-retryable answer, or retries exhausted."""

    def __init__(self, message: str, status: Optional[int] = None):
        super().__init__(message)
        self.status = status

    @property
    def over_context(self) -> bool:
        """The server refused the request because it does not fit the model's context: the same request
        gets the same answer every time (a verdict on the item, not an outage)."""
        return self.status in (400, 413, 422) and bool(_OVER_CONTEXT.search(str(self)))


class EndpointRefused(DeepwriterError):
    """A 401, 403 or 404: the endpoint refuses every request of this kind (key, model name, URL), so
    the stage stops at the first one with this line instead of retrying every item."""


class BadPayload(Exception):
    """A 200 answer whose body does not have the expected shape (truncated proxies, wrong server):
    retried like a transient failure."""


@dataclass
class CallRecord:
    url: str
    status: Optional[int]  # None: no HTTP answer (timeout, dropped connection)
    attempt: int  # 0 = first try
    latency_s: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: Optional[str] = None


@dataclass
class Usage:
    requests: int = 0  # HTTP calls made, retries included
    retries: int = 0
    failed: int = 0  # logical requests given up on
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0  # summed over HTTP calls


def run_sync(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from sync code, also when this thread already runs a loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="deepwriter-http") as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


def _retry_after(resp: httpx.Response) -> Optional[float]:
    value = resp.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time()) if when else None


def _error_message(resp: httpx.Response) -> str:
    try:
        body = resp.json()
        err = body.get("error", body) if isinstance(body, dict) else body
        msg = err.get("message", err) if isinstance(err, dict) else err
        return str(msg)[:500]
    except (json.JSONDecodeError, ValueError):
        return resp.text[:200]


class Transport:
    """Base URLs, balancing, bounded concurrency, retries, the key and the call records."""

    def __init__(self, endpoint: EndpointConfig, where: str = "endpoint"):
        if not endpoint.base_urls:
            raise EndpointError(f"{where}.base_urls: at least one base URL is required (e.g. http://127.0.0.1:8000/v1)")
        if endpoint.max_concurrency < 1:
            raise EndpointError(f"{where}.max_concurrency: must be >= 1, got {endpoint.max_concurrency}")
        self.endpoint = endpoint
        self.base_urls = [u.rstrip("/") for u in endpoint.base_urls]
        self._headers = {"Content-Type": "application/json"}
        if endpoint.api_key_env:
            key = os.environ.get(endpoint.api_key_env)
            if not key:
                raise EndpointError(
                    f"{where}.api_key_env: the environment variable {endpoint.api_key_env} is not set "
                    f"(set it, or set api_key_env to null for a server without a key)"
                )
            self._headers["Authorization"] = f"Bearer {key}"
        self._outstanding = {u: 0 for u in self.base_urls}
        self._next = 0
        self._lock = threading.Lock()
        self._ssl_context: Optional[ssl.SSLContext] = None
        self.usage = Usage()
        self.calls: deque = deque(maxlen=100_000)

    def __repr__(self) -> str:
        return f"Transport(base_urls={self.base_urls}, api_key_env={self.endpoint.api_key_env!r})"

    # -- balancing --
    def _acquire_url(self) -> str:
        with self._lock:
            low = min(self._outstanding.values())
            n = len(self.base_urls)
            # ties go round-robin, so an idle pool still spreads the first requests
            for k in range(n):
                url = self.base_urls[(self._next + k) % n]
                if self._outstanding[url] == low:
                    self._next = (self._next + k + 1) % n
                    self._outstanding[url] += 1
                    return url
        raise AssertionError("unreachable")

    def _release_url(self, url: str) -> None:
        with self._lock:
            self._outstanding[url] -= 1

    def _record(self, rec: CallRecord) -> None:
        with self._lock:
            self.calls.append(rec)
            self.usage.requests += 1
            self.usage.retries += rec.attempt > 0
            self.usage.latency_s += rec.latency_s
            self.usage.prompt_tokens += rec.prompt_tokens
            self.usage.completion_tokens += rec.completion_tokens

    def _backoff(self, attempt: int) -> float:
        base = min(_MAX_BACKOFF_S, self.endpoint.backoff_s * (2**attempt))
        return base * (0.5 + 0.5 * random.random())

    def client(self) -> httpx.AsyncClient:
        # One client per event loop (each sync call runs its own loop), but one SSL context for all:
        # loading the CA bundle costs ~0.15 s of CPU, which dominated short judge calls.
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()
        n = self.endpoint.max_concurrency
        return httpx.AsyncClient(
            verify=self._ssl_context,
            timeout=httpx.Timeout(self.endpoint.timeout_s),
            limits=httpx.Limits(
                max_connections=n * len(self.base_urls), max_keepalive_connections=n * len(self.base_urls)
            ),
            headers=self._headers,
        )

    async def call(
        self,
        client: httpx.AsyncClient,
        sem: asyncio.Semaphore,
        path: str,
        body: dict,
        parse: Callable[[dict], T],
        root: bool = False,
    ) -> T:
        """POST `body` to `path` (under /v1, or under the server root when `root`), retried until
        `parse` accepts the answer. Raises RequestFailed when it gives up."""
        last = "no attempt made"
        for attempt in range(self.endpoint.max_retries + 1):
            delay: Optional[float] = None
            async with sem:
                base = self._acquire_url()
                url = (base[: -len("/v1")] if root and base.endswith("/v1") else base) + path
                t0 = time.perf_counter()
                status: Optional[int] = None
                try:
                    resp = await client.post(url, json=body)
                    status = resp.status_code
                    if status == 200:
                        try:
                            payload = resp.json()
                            result = parse(payload)
                        except (
                            json.JSONDecodeError,
                            UnicodeDecodeError,
                            BadPayload,
                            KeyError,
                            IndexError,
                            TypeError,
                        ) as exc:
                            raise BadPayload(
                                f"malformed response body ({type(exc).__name__}: {str(exc)[:120]})"
                            ) from exc
                        usage = payload.get("usage") or payload.get("meta_info") or {}
                        self._record(
                            CallRecord(
                                url,
                                status,
                                attempt,
                                time.perf_counter() - t0,
                                int(usage.get("prompt_tokens") or 0),
                                int(usage.get("completion_tokens") or 0),
                            )
                        )
                        return result
                    last = f"HTTP {status} from {url}: {_error_message(resp)}"
                    self._record(CallRecord(url, status, attempt, time.perf_counter() - t0, error=last))
                    if status in _REFUSED_STATUS:
                        raise EndpointRefused(
                            f"{last} (the endpoint refuses this request; check endpoint.base_urls, "
                            "endpoint.model and endpoint.api_key_env; stopped at the first such answer)"
                        )
                    if status not in _RETRY_STATUS:
                        raise RequestFailed(last, status)
                    if status == 429:
                        delay = _retry_after(resp)
                except BadPayload as exc:
                    last = f"{exc} from {url}"
                    self._record(CallRecord(url, status, attempt, time.perf_counter() - t0, error=last))
                except (httpx.TimeoutException, httpx.TransportError) as exc:
                    last = f"{type(exc).__name__} from {url}: {exc}"
                    self._record(CallRecord(url, None, attempt, time.perf_counter() - t0, error=last))
                finally:
                    self._release_url(base)
            if attempt == self.endpoint.max_retries:
                break
            # the semaphore is released while waiting, so other requests keep the servers busy
            if delay is not None:
                delay += random.uniform(0, min(0.1, 0.1 * delay))
            else:
                delay = self._backoff(attempt)
            log.warning("retry %d/%d in %.2fs after %s", attempt + 1, self.endpoint.max_retries, delay, last)
            await asyncio.sleep(delay)
        raise RequestFailed(f"gave up after {self.endpoint.max_retries + 1} attempts; last: {last}")

    def failed(self) -> None:
        with self._lock:
            self.usage.failed += 1

    async def map(
        self, items: Sequence[Any], one: Callable[[httpx.AsyncClient, asyncio.Semaphore, Any], Awaitable[T]], what: str
    ) -> List[T]:
        """Run `one` over `items` concurrently (bounded), keeping the input order."""
        sem = asyncio.Semaphore(self.endpoint.max_concurrency)
        async with self.client() as client:
            tasks = [asyncio.ensure_future(one(client, sem, it)) for it in items]
            if len(tasks) >= 64:  # a progress bar only for batches big enough to wait on
                from tqdm.auto import tqdm

                with tqdm(total=len(tasks), desc=what, unit="req", leave=False) as bar:
                    for t in tasks:
                        t.add_done_callback(lambda _t: bar.update(1))
                    return list(await asyncio.gather(*tasks))
            return list(await asyncio.gather(*tasks))


class HTTPClient:
    """Shared by the generator and the scorer: usage totals and per-call records of the transport."""

    transport: "Transport"

    @property
    def usage(self) -> Usage:
        return self.transport.usage

    @property
    def calls(self) -> deque:
        return self.transport.calls
