"""The HTTP API: OpenAI-compatible chat completions, tmd's own answer endpoint, models, health, metrics.

Every error is a JSON body {"error": {"message", "type", "param", "code"}} as OpenAI's API sends it;
bad requests are 422 with a one-line message, a body over --max-body-size is 413, a full queue is 429
with Retry-After, a server shutting down answers 503, and nothing a client sends can produce a
traceback in a response.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..core.errors import TmdError
from ..runtime.generation import Cancelled
from ..runtime.pipeline import ModuleSet, Trace
from ..runtime.shipped import SHIPPED_SYSTEMS
from .engine import Engine, Job, QueueFull, Sampling, ShuttingDown
from .limits import RequestLimits
from .schema import (
    SERVED_SYSTEMS,
    AnswerRequest,
    BadRequest,
    ChatRequest,
    answer_question,
    question_from_chat,
)

log = logging.getLogger("tmd.serve")
DISCONNECT_POLL_SECONDS = 0.25
PING_SECONDS = 15  # a comment line this often keeps proxies from closing a stream waiting in the queue
FINAL_STAGE = {"tmd": "reasoner", "drd": "drd", "mc": "mc"}  # whose text is the reply's content
MAX_BODY_BYTES = 4 * 1024 * 1024  # a question with 26 options of 1000 characters is ~30 KB


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, kind: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code
        self.headers = headers or {}


def error_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def create_app(engine: Engine, *, label: str, bundle_name: str, api_key: str | None = None,
               max_body_bytes: int = MAX_BODY_BYTES, shipped_name: str | None = None) -> FastAPI:
    """`label`/`bundle_name`: what the server runs; `shipped_name`: the shipped students' bundle when
    the engine answers four-option TMD/DRD questions with them (engine.shipped)."""
    named = {bundle_name: engine.modules}  # '<bundle>/<system>' model names pin a request to these
    if engine.shipped is not None and shipped_name and shipped_name != bundle_name:
        named[shipped_name] = engine.shipped

    @asynccontextmanager
    async def lifespan(app):
        engine.start()
        yield
        await asyncio.to_thread(engine.close)

    # No /docs: the Swagger page loads its scripts from a CDN, and this server runs offline.
    app = FastAPI(title="tmd", lifespan=lifespan, docs_url=None, redoc_url=None)
    _install_error_handlers(app, engine)
    app.add_middleware(RequestLimits, limit=max_body_bytes, on_refused=engine.metrics.count_rejected)
    authorized = [Depends(_bearer_check(api_key, engine))]

    @app.get("/health")
    async def health():
        snapshot = engine.snapshot()
        four = {"four_options": engine.shipped.label} if engine.shipped is not None else {}
        return {"status": "ok", "model": label, **four, "queue_length": snapshot["queue_length"],
                "running": snapshot["running"]}

    @app.get("/metrics", dependencies=authorized)
    async def metrics():
        return engine.snapshot()

    @app.get("/v1/models", dependencies=authorized)
    async def models():
        created = int(time.time())
        data = []
        for system in SERVED_SYSTEMS:
            info = {"bundle": label, "system": system, "alias": f"{bundle_name}/{system}"}
            if engine.shipped is not None and system in SHIPPED_SYSTEMS:
                info["four_options"] = engine.shipped.label  # who answers a four-option question
            data.append({"id": system, "object": "model", "created": created, "owned_by": "tmd", "tmd": info})
        for name, modules in named.items():
            if modules is not engine.modules:
                data += [{"id": f"{name}/{system}", "object": "model", "created": created, "owned_by": "tmd",
                          "tmd": {"bundle": modules.label, "system": system}} for system in SHIPPED_SYSTEMS]
        return {"object": "list", "data": data}

    @app.post("/v1/tmd/answer", dependencies=authorized)
    async def answer(body: AnswerRequest, request: Request):
        question = _checked(answer_question, body, engine.next_id(), engine=engine)
        sampling = _sampling(engine, body.max_tokens, body.temperature, body.seed)
        job = _submit(engine, body.system, question, sampling)
        trace = await _wait(job, request)
        return trace.to_dict()

    @app.post("/v1/chat/completions", dependencies=authorized)
    async def chat_completions(body: ChatRequest, request: Request):
        system, modules = _system_for(body.model, bundle_name, named)
        question = _checked(question_from_chat, body, engine.next_id(), engine=engine)
        sampling = _sampling(engine, body.max_completion_tokens or body.max_tokens, body.temperature, body.seed)
        job = _submit(engine, system, question, sampling, stream=body.stream, modules=modules)
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        if body.stream:
            # Plain StreamingResponse, not sse-starlette: that one cuts every stream the moment
            # uvicorn is signalled, where a graceful shutdown must let them end (server.py).
            return StreamingResponse(_stream_chat(job, body.model, completion_id, _label(job, label)),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        trace = await _wait(job, request)
        return _completion(trace, body.model, completion_id, _label(job, label))

    return app


# --- requests in -------------------------------------------------------------------------------

def _bearer_check(api_key: str | None, engine: Engine):
    expected = api_key.encode() if api_key else None

    async def check(request: Request) -> None:
        if expected is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        # compare_digest takes as long whatever the mismatch, so timing tells nothing about the key.
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
            engine.metrics.rejected += 1
            raise ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                           kind="authentication_error", code="invalid_api_key",
                           headers={"WWW-Authenticate": "Bearer"})
    return check


def _system_for(model: str, bundle_name: str, named: dict[str, ModuleSet] | None = None
                ) -> tuple[str, ModuleSet | None]:
    """(system, modules): a bare system name leaves the modules to the engine (None); '<bundle>/<system>'
    pins the request to that bundle's modules."""
    name, modules = model.strip(), None
    for prefix, pinned in (named or {bundle_name: None}).items():
        if name.startswith(f"{prefix}/"):
            name, modules = name[len(prefix) + 1:], pinned
            if pinned is not None and prefix != bundle_name and name not in SHIPPED_SYSTEMS:
                name = ""  # the shipped students answer TMD and DRD only
            break
    if name not in SERVED_SYSTEMS:
        raise ApiError(422, f"model {model!r}: this server answers with {', '.join(SERVED_SYSTEMS)} "
                            f"(or {bundle_name}/<system>); GET /v1/models lists them",
                       param="model", code="model_not_found")
    return name, modules


def _label(job: Job, default: str) -> str:
    """What answered the job: the label of its modules (the server's, or the shipped students')."""
    return job.modules.label if job.modules is not None and job.modules.label else default


def _checked(parse, body, qid: str, *, engine: Engine):
    try:
        question = parse(body, qid)
    except BadRequest as e:
        raise ApiError(422, str(e), param=e.param) from None
    # A prompt must leave room in the context for the answer; ~4 characters a token, English text.
    limit = engine.settings.n_ctx * 2
    size = len(question.question) + sum(map(len, question.options.values()))
    if size > limit:
        raise ApiError(422, f"question and options are {size} characters; this server (n_ctx "
                            f"{engine.settings.n_ctx}) takes at most {limit}", param="messages")
    return question


def _sampling(engine: Engine, max_tokens: int | None, temperature: float | None, seed: int | None) -> Sampling:
    return Sampling(temperature=engine.settings.temperature if temperature is None else temperature,
                    seed=engine.settings.seed if seed is None else seed, max_tokens=max_tokens)


def _submit(engine: Engine, system: str, question, sampling: Sampling, stream: bool = False,
            modules: ModuleSet | None = None) -> Job:
    try:
        return engine.submit(system, question, sampling, stream=stream, modules=modules)
    except QueueFull as e:
        raise ApiError(429, str(e), kind="rate_limit_error", code="queue_full",
                       headers={"Retry-After": str(e.retry_after)}) from None
    except ShuttingDown as e:
        raise ApiError(503, str(e), kind="server_error", code="shutting_down") from None
    except TmdError as e:
        raise ApiError(503, str(e), kind="server_error") from None


async def _wait(job: Job, request: Request) -> Trace:
    """The job's trace; a client that disconnects meanwhile cancels the job."""
    try:
        while True:
            done, _ = await asyncio.wait({job.result}, timeout=DISCONNECT_POLL_SECONDS)
            if done:
                break
            if await request.is_disconnected():
                job.cancel()
                raise ApiError(499, "client disconnected", kind="cancelled")
    except asyncio.CancelledError:
        job.cancel()
        raise
    try:
        return job.result.result()
    except Cancelled as e:
        raise ApiError(499, str(e), kind="cancelled") from None
    except ShuttingDown as e:
        raise ApiError(503, str(e), kind="server_error", code="shutting_down") from None
    except TmdError as e:
        raise ApiError(500, str(e), kind="server_error") from None


# --- replies out -------------------------------------------------------------------------------

def answer_line(trace: Trace) -> str:
    letter = trace.answer
    return f"Answer: {letter}. {trace.question.options[letter]}" if letter else "Answer: none"


def reply_content(trace: Trace) -> str:
    """What an OpenAI client shows: the reasoning, then the answer."""
    return f"{trace.reasoning}\n\n{answer_line(trace)}" if trace.reasoning else answer_line(trace)


def _usage(trace: Trace) -> dict:
    prompt = sum(s.prompt_tokens for s in trace.stages.values())
    completion = sum(s.completion_tokens for s in trace.stages.values())
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _finish_reason(trace: Trace) -> str:
    last = trace.stages.get(FINAL_STAGE.get(trace.system, ""))
    return "length" if last and last.finish_reasons and last.finish_reasons[-1] == "length" else "stop"


def _completion(trace: Trace, model: str, completion_id: str, label: str) -> dict:
    return {"id": completion_id, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply_content(trace)},
                         "finish_reason": _finish_reason(trace)}],
            "usage": _usage(trace), "tmd": {"bundle": label, "trace": trace.to_dict()}}


def _chunk(completion_id: str, model: str, delta: dict, finish: str | None = None, **extra) -> str:
    return json.dumps({"id": completion_id, "object": "chat.completion.chunk", "created": int(time.time()),
                       "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                       **extra}, ensure_ascii=False)


def _sse(data: str) -> str:
    return f"data: {data}\n\n"


async def _stream_chat(job: Job, model: str, completion_id: str, label: str):
    """Server-sent events: every pipeline event in a chunk's `tmd` field, the final stage's tokens
    as content, then the answer line, the trace, and [DONE]. A client leaving cancels the job."""
    final_stage = FINAL_STAGE[job.system]
    try:
        yield _sse(_chunk(completion_id, model, {"role": "assistant", "content": ""},
                          tmd={"event": "queued", "bundle": label}))
        while True:
            try:
                event = await asyncio.wait_for(job.events.get(), PING_SECONDS)
            except TimeoutError:
                yield ": ping\n\n"
                continue
            if event["event"] == "end":
                break
            is_content = event["event"] == "text" and event["stage"] == final_stage
            yield _sse(_chunk(completion_id, model, {"content": event["text"]} if is_content else {}, tmd=event))
        try:
            trace = job.result.result()
        except Exception as e:  # noqa: BLE001 - sent as an error event; openai's client raises it
            kind = "cancelled" if isinstance(e, Cancelled) else "server_error"
            message = str(e) if isinstance(e, TmdError) else "internal error (see the server log)"
            yield _sse(json.dumps(error_body(message, kind)))
            return
        yield _sse(_chunk(completion_id, model, {"content": "\n\n" + answer_line(trace)}))
        yield _sse(_chunk(completion_id, model, {}, _finish_reason(trace), usage=_usage(trace),
                          tmd={"event": "done", "trace": trace.to_dict()}))
        yield _sse("[DONE]")
    finally:
        if not job.result.done():
            job.cancel()  # the client went away before the end


# --- errors ------------------------------------------------------------------------------------

def _install_error_handlers(app: FastAPI, engine: Engine) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request, exc: ApiError):
        if 400 <= exc.status < 500 and exc.status not in (401, 429, 499):
            engine.metrics.rejected += 1
        return JSONResponse(error_body(exc.message, exc.kind, exc.param, exc.code), exc.status, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc: RequestValidationError):
        engine.metrics.rejected += 1
        problems = [_describe(error) for error in exc.errors()]
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        if first.get("type") == "json_invalid":
            param = None
        return JSONResponse(error_body("; ".join(problems) or "invalid request", "invalid_request_error", param),
                            422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc: StarletteHTTPException):
        code = "request_too_large" if exc.status_code == 413 else None
        return JSONResponse(error_body(str(exc.detail), "invalid_request_error", code=code), exc.status_code,
                            getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request, exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body("internal error (see the server log)", "server_error"), 500)


def _describe(error: dict) -> str:
    """One pydantic error as 'messages.0.role: Field required'."""
    loc = [str(p) for p in error.get("loc", ()) if p != "body"]
    where = ".".join(loc) or "body"
    message = error.get("msg", "invalid")
    if error.get("type") == "json_invalid":
        return f"body is not valid JSON ({error.get('ctx', {}).get('error', message)})"
    return f"{where}: {message}"
