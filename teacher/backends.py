"""Model teachers: any OpenAI-compatible chat API, or a local GGUF through llama.cpp.

Both answer `complete(messages, max_tokens) -> Reply` and never raise for a bad *reply*: an empty,
huge, malformed or undecodable answer comes back as a Reply with `problem` set, so one odd answer
costs one trace, not the run. They raise TmdError only when the run cannot go on (bad key, unknown
model, server unreachable after every retry).
"""

from __future__ import annotations

import random
import re
import threading
import time
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit, urlunsplit

from tmd_local.core.errors import TmdError

MAX_REPLY_CHARS = 16_000  # far beyond any stage's max_tokens; longer means a runaway/broken server
MAX_BACKOFF_SECONDS = 60.0
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

# Reply problems (they become rejection reasons).
EMPTY, TOO_LONG, MALFORMED, REFUSED, NO_ROOM = (
    "empty_reply", "reply_too_long", "malformed_reply", "request_rejected", "prompt_too_long")


@dataclass
class Reply:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    finish_reason: str = ""
    problem: str | None = None  # None, or one of the problem names above
    detail: str = ""  # a short, key-free note on the problem (e.g. "HTTP 400")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Reply":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def clean_text(raw) -> tuple[str, str | None]:
    """A reply's text made safe to store, and the problem with it if any.

    Lone surrogates (from undecodable bytes) would make the JSONL writer fail, and control characters
    would be trained on verbatim, so both are replaced; the text is clipped to MAX_REPLY_CHARS."""
    if raw is None:
        return "", EMPTY
    if not isinstance(raw, str):
        return "", MALFORMED
    text = raw.encode("utf-8", errors="replace").decode("utf-8", errors="replace")
    text = _CONTROL.sub("", text).replace("\r\n", "\n").strip()
    if not text:
        return "", EMPTY
    if len(text) > MAX_REPLY_CHARS:
        return text[:MAX_REPLY_CHARS], TOO_LONG
    return text, None


# --- OpenAI-compatible APIs ------------------------------------------------------------------

class TeacherFailedLocally(TmdError):
    """The call never got an answer from the teacher (a bug or a setting on this side). It is fatal
    and never journaled: a rerun with the cause fixed must ask the teacher, not replay the failure."""


class _DeadlineExceeded(Exception):
    """The whole request took longer than --timeout (a server may send one byte at a time, and the
    HTTP client's timeout only bounds each read)."""


class OpenAIBackend:
    """Chat completions over HTTP with our own retry loop (the SDK's is off), so retries are counted
    and a 401 fails at once instead of being retried. `timeout` bounds each whole request."""

    def __init__(self, model: str, *, base_url: str | None, api_key: str | None, api_key_env: str,
                 timeout: float, retries: int, backoff: float, temperature: float = 0.0):
        from openai import OpenAI  # late: the SDK (and httpx) cost import time --help should not pay

        self.model = model
        self.name = f"openai:{model}"
        self.base_url = base_url
        self.api_key_env = api_key_env
        self.retries, self.backoff, self.temperature = retries, backoff, temperature
        self.timeout = timeout
        self._secret = api_key or ""
        self._lock = threading.Lock()
        self.retried = 0  # requests re-sent after a transient failure, over the whole run
        # Local servers ignore the key, but the SDK insists on one.
        self._client = OpenAI(api_key=api_key or "no-key-set", base_url=base_url, timeout=timeout,
                              max_retries=0)

    @property
    def where(self) -> str:
        return public_url(self.base_url or "https://api.openai.com/v1")

    def complete(self, messages: list[dict], max_tokens: int) -> Reply:
        for attempt in range(self.retries + 1):
            started = time.perf_counter()
            try:
                response = within_deadline(self.timeout, lambda: self._client.chat.completions.create(
                    model=self.model, messages=messages, max_tokens=max_tokens,
                    temperature=self.temperature))
            except Exception as e:  # noqa: BLE001 - sorted into fatal / retry / bad reply below
                delay = self._failure(e, attempt)
                with self._lock:
                    self.retried += 1
                time.sleep(delay)
                continue
            return _reply_from(response, time.perf_counter() - started)
        raise AssertionError("unreachable: the last failed attempt raises")

    def _failure(self, error: Exception, attempt: int) -> float:
        """Raise for a fatal error (or a transient one out of retries); else the delay before retrying.
        A request-specific failure (4xx such as 400 or 413) is returned as a Reply via _Rejected."""
        import openai

        status = getattr(error, "status_code", None)
        if isinstance(error, _DeadlineExceeded):
            pass  # transient, like the SDK's own timeout
        elif isinstance(error, openai.APIStatusError):
            if status in (401, 403):
                raise TmdError(f"teacher at {self.where} refused the API key from ${self.api_key_env} "
                               f"(HTTP {status}); check the key and --base-url") from None
            if status == 404:
                raise TmdError(f"teacher at {self.where} has no model {self.model!r} or no chat "
                               f"completions endpoint (HTTP 404)") from None
            if not _transient_status(status):
                raise _Rejected(f"HTTP {status}")
        elif not isinstance(error, openai.APIConnectionError):  # includes APITimeoutError
            if not _from_the_reply(error):
                raise TeacherFailedLocally(
                    f"teacher call failed on this side before any reply ({type(error).__name__}: "
                    f"{self._redact(str(error))[:120]}); nothing was journaled, rerun once fixed") from None
            raise _Rejected(f"{type(error).__name__}", malformed=True)
        if attempt >= self.retries:
            what = (f"HTTP {status}" if status else f"no complete reply within --timeout {self.timeout:g} s"
                    if isinstance(error, _DeadlineExceeded) else self._redact(_connection_reason(error)))
            raise TmdError(f"teacher at {self.where} failed {attempt + 1} times ({what}); finished "
                           "work is saved, rerun the same command to resume") from None
        return self._delay(error, attempt)

    def _delay(self, error: Exception, attempt: int) -> float:
        delay = self.backoff * (2 ** attempt) * random.uniform(0.8, 1.2)  # jitter: threads spread out
        retry_after = _retry_after(error)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, MAX_BACKOFF_SECONDS)

    def _redact(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def close(self) -> None:
        self._client.close()


class _Rejected(Exception):
    """A failure that concerns this request only: recorded as a bad reply, the run goes on."""

    def __init__(self, detail: str, malformed: bool = False):
        super().__init__(detail)
        self.detail, self.malformed = detail, malformed


def within_deadline(seconds: float, call):
    """call() in a worker thread, given up after `seconds` in all (_DeadlineExceeded). The worker
    is a daemon and is left to end by itself: the HTTP client's per-read timeout ends it once the
    server stops sending, and a dribbling server's connection dies with the process."""
    outcome: dict = {}
    done = threading.Event()

    def work() -> None:
        try:
            outcome["value"] = call()
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            outcome["error"] = e
        finally:
            done.set()

    threading.Thread(target=work, name="teacher-request", daemon=True).start()
    if not done.wait(seconds):
        raise _DeadlineExceeded(f"no complete reply within {seconds:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _from_the_reply(error: Exception) -> bool:
    """Whether an error came from reading the server's reply (a body that is not the JSON of a
    chat completion), as opposed to a failure on this side before or without any reply."""
    import json

    import openai

    if isinstance(error, (openai.APIError, json.JSONDecodeError, UnicodeDecodeError)):
        return True
    try:
        import pydantic

        return isinstance(error, pydantic.ValidationError)
    except ImportError:
        return False


def _transient_status(status: int | None) -> bool:
    return status is not None and (status in (408, 409, 429) or status >= 500)


def _retry_after(error: Exception) -> float | None:
    response = getattr(error, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date; the exponential delay will do


def _connection_reason(error: Exception) -> str:
    cause = error.__cause__ or error.__context__
    text = str(cause) if cause else str(error)
    if "refused" in text.lower():
        return "connection refused"
    if "timed out" in text.lower() or type(error).__name__ == "APITimeoutError":
        return "timed out"
    return f"{type(error).__name__}: {text[:120]}"


def _reply_from(response, seconds: float) -> Reply:
    """A parsed chat completion -> Reply; any missing piece makes it a malformed reply."""
    try:
        choice = response.choices[0]
        text, problem = clean_text(choice.message.content)
        usage = getattr(response, "usage", None)
        return Reply(text, int(getattr(usage, "prompt_tokens", 0) or 0),
                     int(getattr(usage, "completion_tokens", 0) or 0), round(seconds, 3),
                     str(choice.finish_reason or ""), problem)
    except (AttributeError, IndexError, TypeError, ValueError, KeyError):
        return Reply("", seconds=round(seconds, 3), problem=MALFORMED, detail="unexpected response shape")


def complete_safely(backend, messages: list[dict], max_tokens: int) -> Reply:
    """backend.complete, with request-specific failures turned into a Reply instead of an exception."""
    try:
        return backend.complete(messages, max_tokens)
    except _Rejected as e:
        return Reply("", problem=MALFORMED if e.malformed else REFUSED, detail=e.detail)


def public_url(url: str) -> str:
    """A URL without user:password and query (some proxies take keys there): safe to print and store."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc, query="", fragment=""))


# --- local GGUF ------------------------------------------------------------------------------

class GGUFBackend:
    """One llama.cpp model, loaded once for the whole run. llama.cpp is not thread-safe, so calls
    are serialized (the run uses one worker for this backend anyway)."""

    def __init__(self, ref, n_ctx: int, temperature: float = 0.0, threads: int | None = None):
        from tmd_local.runtime.generation import GenerationSettings
        from tmd_local.runtime.runner import LoadedModule

        self.name = f"gguf:{ref.name}"
        self.ref = ref
        self.retried = 0
        self._lock = threading.Lock()
        settings = GenerationSettings(n_ctx=n_ctx, temperature=temperature)
        if threads:
            settings.n_threads = threads
        self.threads = settings.n_threads
        self._module = LoadedModule(ref, settings)
        self.load_seconds = self._module.load_seconds

    def complete(self, messages: list[dict], max_tokens: int) -> Reply:
        from tmd_local.runtime.generation import MIN_NEW_TOKENS

        with self._lock:
            prompt_tokens = len(self._module.tokenize(self._module.render(messages)))
            if self._module.room_for(prompt_tokens) < MIN_NEW_TOKENS:  # this question only: go on
                return Reply("", prompt_tokens=prompt_tokens, problem=NO_ROOM,
                             detail=f"{prompt_tokens}-token prompt, n_ctx {self._module.settings.n_ctx}")
            gen = self._module.generate(messages, max_tokens)
        text, problem = clean_text(gen.text)
        return Reply(text, gen.prompt_tokens, gen.completion_tokens, round(gen.seconds, 3),
                     gen.finish_reason, problem)

    def close(self) -> None:
        self._module.close()
