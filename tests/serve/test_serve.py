"""`tmd serve` on the embedded model: a real server on 127.0.0.1 driven by the `openai` client and
plain HTTP. Answers, streaming, cancel, bad requests, auth, and a bounded load test."""

from __future__ import annotations

import json
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from click.testing import CliRunner

from tmd_local.runtime.pipeline import Trace
from tmd_local.core.records import Question
from tmd_local.serve.process import ServerProcess
from tmd_local.serve.schema import BadRequest, normalize_options, split_options

KEY = "test-key-0f3a9c"  # never printed by the server: checked against its log below
KEY_ENV = "TMD_SERVE_TEST_KEY"
QUEUE_SIZE = 16
BUDGET = "700MB"
PENGUIN = "Could a penguin live in the Sahara?\nA. yes\nB. no"
FOG = "Fog is most likely around:\nA. a marsh\nB. a desert\nC. a volcano\nD. the moon"


# --- parsing, no server ----------------------------------------------------------------------------

@pytest.mark.parametrize("text, question, options", [
    ("Could a penguin live in the Sahara?\nA. yes\nB. no", "Could a penguin live in the Sahara?",
     {"A": "yes", "B": "no"}),
    ("Question: Fog is likely around:\nOptions:\n(A) a marsh\n(B) a desert\n(C) plains", "Fog is likely around:",
     {"A": "a marsh", "B": "a desert", "C": "plains"}),
    ("Is ice cold? (A) yes (B) no", "Is ice cold?", {"A": "yes", "B": "no"}),
    ("List: I: one\nA. first\nB. second", "List: I: one", {"A": "first", "B": "second"}),
    ("What is 2+2?", "What is 2+2?", {}),
    ("Pick one\nB. no\nC. maybe", "Pick one\nB. no\nC. maybe", {}),  # must start at A
])
def test_split_options(text, question, options):
    assert split_options(text) == (question, options)


def test_normalize_options():
    assert normalize_options(["yes", "no"]) == {"A": "yes", "B": "no"}
    assert normalize_options({"a": " yes ", "b": "no"}) == {"A": "yes", "B": "no"}
    for bad, fragment in [(["only"], "at least two"), ({"AB": "x", "C": "y"}, "single letter"),
                          ({"A": "", "B": "x"}, "empty"), ({"a": "x", "A": "y"}, "twice")]:
        with pytest.raises(BadRequest, match=fragment):
            normalize_options(bad)


def test_serve_refuses_a_public_address_without_a_key(monkeypatch):
    from tmd_local.cli import cli

    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    result = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 1 and "--api-key-env" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0", "--api-key-env", "NO_SUCH_KEY_VAR"])
    assert result.exit_code == 1 and "NO_SUCH_KEY_VAR" in result.output and "not set" in result.output


# --- which modules answer: the shipped students for four options (fake modules, no server) ---------

def _fake_sets():
    from pathlib import Path

    from tmd_local.core.registry import ModelRef
    from tmd_local.core.roles import ROLES
    from tmd_local.runtime.pipeline import ModuleSet

    def modules(name):
        return ModuleSet(**{role: ModelRef(Path(f"fake/{name}-{role}.gguf"), f"{name}/{role}") for role in ROLES},
                         label=f"{name} (q4_1)")
    return modules("smollm2-135m-instruct"), modules("openbook-135m")


def test_four_option_questions_go_to_the_shipped_students_and_never_share_their_batch():
    import asyncio

    from tmd_local.runtime.fake import FakeLoader
    from tmd_local.serve.engine import Engine, Sampling

    default, shipped = _fake_sets()
    loader = FakeLoader(lambda prompt: "Final Answer: A")
    engine = Engine(default, loader.pool(), shipped=shipped)
    four = Question("four", "Fog is most likely around:", {"A": "a marsh", "B": "a desert", "C": "a volcano",
                                                            "D": "the moon"})
    two = Question("two", "Could a penguin live in the Sahara?", {"A": "yes", "B": "no"})

    async def main():
        # All queued before the worker starts: same system and sampling, so only the modules can split them.
        jobs = [engine.submit("drd", q, Sampling()) for q in (four, two, four)]
        jobs.append(engine.submit("drd", four, Sampling(), modules=default))  # a request naming its bundle
        jobs.append(engine.submit("mc", four, Sampling()))
        engine.start()
        try:
            return jobs, await asyncio.gather(*(job.result for job in jobs))
        finally:
            await asyncio.to_thread(engine.close)

    jobs, traces = asyncio.run(main())
    assert [job.modules.label for job in jobs] == ["openbook-135m (q4_1)", "smollm2-135m-instruct (q4_1)",
                                                   "openbook-135m (q4_1)", "smollm2-135m-instruct (q4_1)",
                                                   "smollm2-135m-instruct (q4_1)"]
    assert [t.stages["drd" if t.system == "drd" else "mc"].model for t in traces] == [
        "openbook-135m/drd", "smollm2-135m-instruct/drd", "openbook-135m/drd", "smollm2-135m-instruct/drd",
        "smollm2-135m-instruct/drd"]
    assert engine.metrics.batches == 3  # shipped (2 jobs), default (2 jobs), mc
    # --zero-shot / --bundle / --model: no shipped students, the server's modules answer everything.
    assert Engine(default, loader.pool()).modules_for("tmd", four) is default
    assert engine.modules_for("tmd", four) is shipped and engine.modules_for("tmd", two) is default


def test_model_names_pin_a_request_to_a_bundle():
    from tmd_local.serve.app import ApiError, _system_for

    default, shipped = _fake_sets()
    named = {"smollm2-135m-instruct": default, "openbook-135m": shipped}
    assert _system_for("tmd", "smollm2-135m-instruct", named) == ("tmd", None)  # the engine decides
    assert _system_for("smollm2-135m-instruct/tmd", "smollm2-135m-instruct", named) == ("tmd", default)
    assert _system_for("openbook-135m/drd", "smollm2-135m-instruct", named) == ("drd", shipped)
    with pytest.raises(ApiError, match="openbook-135m/mc"):
        _system_for("openbook-135m/mc", "smollm2-135m-instruct", named)


def test_shipped_default_only_on_the_embedded_model_without_bundle_or_zero_shot():
    from tmd_local.runtime.shipped import pick, shipped_bundle, shipped_default

    assert shipped_default() == shipped_bundle() is not None
    assert shipped_default("smollm2-135m-instruct") == shipped_bundle()
    assert shipped_default(zero_shot=True) is None and shipped_default(bundle="models/x") is None
    assert shipped_default("other.gguf") is None
    four, two = {k: k for k in "ABCD"}, {"A": "yes", "B": "no"}
    assert pick("tmd", four, "default", "shipped") == "shipped" == pick("drd", four, "default", "shipped")
    assert pick("tmd", two, "default", "shipped") == "default" == pick("mc", four, "default", "shipped")
    assert pick("tmd", four, "default", None) == "default"


# --- a real server on the embedded model -----------------------------------------------------------

@pytest.fixture(scope="module")
def server(embedded_model, tmp_path_factory):
    args = ["--threads", "1", "--queue-size", str(QUEUE_SIZE), "--max-memory", BUDGET,
            "--api-key-env", KEY_ENV, "--log-level", "info"]
    env = {KEY_ENV: KEY, "PYTHONPATH": os.getcwd(), "OMP_WAIT_POLICY": "PASSIVE"}
    with ServerProcess(args, log=tmp_path_factory.mktemp("serve") / "server.log", env=env,
                       api_key=KEY) as running:
        yield running
    assert KEY not in running.log_text()


@pytest.fixture
def client(server):
    import openai

    return openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0, timeout=120)


def post(server, path, body, **kw):
    headers = {"Authorization": f"Bearer {KEY}", **kw.pop("headers", {})}
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return requests.post(server.url + path, data=data, headers={"Content-Type": "application/json", **headers},
                         timeout=kw.pop("timeout", 120), **kw)


def wait_for_idle(server, seconds=60) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        metrics = server.get("/metrics")
        if metrics["queue_length"] == 0 and metrics["running"] == 0:
            return metrics
        time.sleep(0.2)
    raise AssertionError(f"server still busy after {seconds} s: {metrics}")


@pytest.mark.slow
def test_openai_client_gets_answer_reasoning_and_trace(client):
    reply = client.chat.completions.create(model="tmd", max_tokens=24,
                                           messages=[{"role": "user", "content": PENGUIN}])
    content = reply.choices[0].message.content
    trace = reply.model_extra["tmd"]["trace"]
    assert trace["system"] == "tmd" and trace["question"]["options"] == {"A": "yes", "B": "no"}
    assert content.endswith(f"Answer: {trace['answer']}. {trace['question']['options'][trace['answer']]}")
    assert content.startswith(trace["reasoning"])
    assert set(trace["option_probs"]) == {"A", "B"} and abs(sum(trace["option_probs"].values()) - 1) < 1e-3
    assert {"analyzer", "reasoner"} <= set(trace["stages"]) and trace["stages"]["reasoner"]["seconds"] > 0
    assert {"subquestions", "knowledge", "stated_answer", "answer_source"} <= set(trace)
    assert reply.usage.completion_tokens > 0 and reply.model == "tmd"


@pytest.mark.slow
def test_options_in_the_extra_field_and_drd(client):
    reply = client.chat.completions.create(model="smollm2-135m-instruct/drd", max_tokens=16,
                                           messages=[{"role": "user", "content": "Is ice cold?"}],
                                           extra_body={"options": ["yes", "no"]})
    trace = reply.model_extra["tmd"]["trace"]
    assert trace["system"] == "drd" and trace["question"]["options"] == {"A": "yes", "B": "no"}
    assert list(trace["stages"]) == ["drd"]


@pytest.mark.slow
def test_streaming_sends_stage_events_tokens_and_the_trace(client):
    stream = client.chat.completions.create(model="tmd", max_tokens=24, stream=True,
                                            messages=[{"role": "user", "content": PENGUIN}])
    events, content, final = [], "", None
    for chunk in stream:
        event = (chunk.model_extra or {}).get("tmd") or {}
        events.append(event.get("event"))
        if chunk.choices and chunk.choices[0].delta.content:
            content += chunk.choices[0].delta.content
        if event.get("event") == "done":
            final = event["trace"]
            assert chunk.choices[0].finish_reason in ("stop", "length")
    assert events[0] == "queued" and final is not None
    assert {"stage_started", "module_ready", "generation_started", "text", "step_done"} <= set(events)
    assert events.index("stage_started") < events.index("text")
    # The streamed content is the reasoner's tokens then the answer line: what the non-stream reply says.
    assert content.strip().endswith(f"Answer: {final['answer']}. {final['question']['options'][final['answer']]}")
    assert content.strip().startswith(final["reasoning"][:20])


@pytest.mark.slow
def test_four_options_are_answered_by_the_shipped_students(client):
    reply = client.chat.completions.create(model="drd", max_tokens=16, messages=[{"role": "user", "content": FOG}])
    tmd = reply.model_extra["tmd"]
    assert tmd["bundle"] == "openbook-135m (q4_1)" and tmd["trace"]["stages"]["drd"]["model"] == "openbook-135m/drd"
    assert tmd["trace"]["answer"] in "ABCD"
    # Two options, or a request naming the server's own model: the model itself, as before.
    reply = client.chat.completions.create(model="drd", max_tokens=16,
                                           messages=[{"role": "user", "content": PENGUIN}])
    assert reply.model_extra["tmd"]["trace"]["stages"]["drd"]["model"] == "smollm2-135m-instruct"
    reply = client.chat.completions.create(model="smollm2-135m-instruct/drd", max_tokens=16,
                                           messages=[{"role": "user", "content": FOG}])
    assert reply.model_extra["tmd"]["bundle"] == "smollm2-135m-instruct (q4_1)"
    assert reply.model_extra["tmd"]["trace"]["stages"]["drd"]["model"] == "smollm2-135m-instruct"


@pytest.mark.slow
def test_answer_endpoint_returns_the_ask_json_trace(server):
    body = {"question": "Could a penguin live in the Sahara?", "options": {"A": "yes", "B": "no"},
            "system": "drd", "max_tokens": 16}
    reply = post(server, "/v1/tmd/answer", body)
    assert reply.status_code == 200, reply.text
    trace = reply.json()
    # The same schema as `tmd ask --json` (Trace.to_dict).
    assert set(trace) == set(Trace(Question("x", "q", {"A": "a", "B": "b"}), "drd").to_dict())
    assert trace["answer"] in ("A", "B") and trace["stages"]["drd"]["completion_tokens"] > 0


@pytest.mark.slow
def test_models_health_metrics(server):
    health = requests.get(server.url + "/health", timeout=10)  # open: load balancers probe it
    assert health.status_code == 200 and health.json()["status"] == "ok"
    models = requests.get(server.url + "/v1/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
    listed = {m["id"]: m["tmd"] for m in models.json()["data"]}
    assert list(listed) == ["tmd", "drd", "mc", "openbook-135m/tmd", "openbook-135m/drd"]
    assert listed["tmd"]["bundle"] == "smollm2-135m-instruct (q4_1)"
    assert listed["tmd"]["four_options"] == listed["openbook-135m/tmd"]["bundle"] == "openbook-135m (q4_1)"
    assert "four_options" not in listed["mc"]
    metrics = server.get("/metrics")
    for key in ("requests", "answered", "refused", "cancelled", "queue_length", "stage_seconds",
                "resident_rss_mb", "peak_rss_mb", "latency_seconds"):
        assert key in metrics
    assert metrics["memory_budget_mb"] == pytest.approx(700e6 / 2**20, abs=0.1)


BAD_REQUESTS = [
    ({"model": "tmd", "messages": []}, "messages"),
    ({"model": "tmd"}, "messages: Field required"),
    ({"messages": [{"role": "user", "content": PENGUIN}]}, "model: Field required"),
    ({"model": "gpt-4", "messages": [{"role": "user", "content": PENGUIN}]}, "model 'gpt-4'"),
    ({"model": "tmd", "messages": [{"role": "user", "content": "What is 2+2?"}]}, "no answer options"),
    ({"model": "tmd", "messages": [{"role": "system", "content": PENGUIN}]}, "no user message"),
    ({"model": "tmd", "messages": [{"role": "user", "content": "q?"}], "options": ["only one"]}, "at least two"),
    ({"model": "tmd", "messages": [{"role": "user", "content": PENGUIN}], "max_tokens": 0}, "max_tokens"),
    ({"model": "tmd", "messages": [{"role": "user", "content": PENGUIN}], "temperature": "hot"}, "temperature"),
    ({"model": "tmd", "messages": [{"role": "user", "content": PENGUIN}], "n": 3}, "n: "),
    ({"model": "tmd", "messages": [{"role": "user", "content": "x" * 5000 + "\nA. a\nB. b"}]}, "characters"),
    ("{not json", "not valid JSON"),
]


@pytest.mark.slow
@pytest.mark.parametrize("body, fragment", BAD_REQUESTS)
def test_bad_requests_get_422_with_a_clear_message(server, body, fragment):
    reply = post(server, "/v1/chat/completions", body)
    assert reply.status_code == 422, reply.text
    error = reply.json()["error"]
    assert fragment in error["message"] and "Traceback" not in reply.text
    assert "\n" not in error["message"]


@pytest.mark.slow
def test_bad_answer_requests_and_auth(server, client):
    import openai

    reply = post(server, "/v1/tmd/answer", {"question": "q", "options": {"A": "x"}, "surprise": 1})
    assert reply.status_code == 422 and "surprise" in reply.json()["error"]["message"]
    reply = post(server, "/v1/tmd/answer", {"question": "q", "options": ["x", "y"], "system": "gold"})
    assert reply.status_code == 422 and "system" in reply.json()["error"]["message"]
    for headers in ({"Authorization": "Bearer wrong"}, {"Authorization": ""}):
        reply = requests.post(server.url + "/v1/tmd/answer", json={}, headers=headers, timeout=10)
        assert reply.status_code == 401 and reply.headers["WWW-Authenticate"] == "Bearer"
    wrong = openai.OpenAI(base_url=server.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    assert requests.get(server.url + "/nowhere", timeout=10).status_code == 404


@pytest.mark.slow
def test_a_client_that_disconnects_cancels_its_work(server, client):
    before = wait_for_idle(server)
    # Streaming: leave after the first reasoning tokens.
    stream = client.chat.completions.create(model="drd", max_tokens=400, stream=True,
                                            messages=[{"role": "user", "content": PENGUIN}])
    for chunk in stream:
        if ((chunk.model_extra or {}).get("tmd") or {}).get("event") == "text":
            break
    stream.close()
    # Plain HTTP: give up long before 400 tokens could be generated.
    with pytest.raises(requests.exceptions.ReadTimeout):
        post(server, "/v1/chat/completions", {"model": "drd", "max_tokens": 400,
                                              "messages": [{"role": "user", "content": PENGUIN}]}, timeout=1.5)
    after = wait_for_idle(server, seconds=30)
    assert after["cancelled"] - before["cancelled"] == 2
    assert after["answered"] == before["answered"]
    # The worker is free again: the next question is answered.
    reply = client.chat.completions.create(model="drd", max_tokens=8, messages=[{"role": "user", "content": PENGUIN}])
    assert reply.model_extra["tmd"]["trace"]["answer"] in ("A", "B")


@pytest.mark.slow
def test_load_40_concurrent_requests_are_answered_or_refused(server):
    """40 at once on a queue of 16: every request gets 200 or 429 (with Retry-After), none is lost,
    the waiting ones run stage-batched, and memory stays under the budget."""
    before = wait_for_idle(server)
    questions = [f"Question {i}: is {i} an even number?\nA. yes\nB. no" for i in range(40)]

    def ask(text):
        started = time.monotonic()
        reply = post(server, "/v1/chat/completions", {"model": "tmd", "max_tokens": 8,
                                                      "messages": [{"role": "user", "content": text}]},
                     timeout=600)
        return reply, time.monotonic() - started

    with ThreadPoolExecutor(max_workers=40) as pool:
        results = list(pool.map(ask, questions))
    statuses = [reply.status_code for reply, _ in results]
    answered = [(reply, seconds) for reply, seconds in results if reply.status_code == 200]
    refused = [reply for reply, _ in results if reply.status_code == 429]
    assert len(answered) + len(refused) == 40, statuses
    assert answered and all(int(r.headers["Retry-After"]) >= 1 for r in refused)
    for (reply, _), text in zip(results, questions):
        if reply.status_code == 200:  # each answer is to its own question
            assert reply.json()["tmd"]["trace"]["question"]["question"] == text.split("\n")[0]
    after = wait_for_idle(server)
    assert after["answered"] - before["answered"] == len(answered)
    assert after["refused"] - before["refused"] == len(refused)
    assert after["batches"] - before["batches"] < len(answered)  # waiting questions shared module loads
    peak = server.peak_rss_mb()
    assert peak < 700e6 / 2**20
    latencies = sorted(seconds for _, seconds in answered)
    figures = {"requests": 40, "answered": len(answered), "refused": len(refused),
               "p50_s": round(statistics.median(latencies), 2),
               "p95_s": round(latencies[max(0, round(0.95 * len(latencies)) - 1)], 2),
               "peak_rss_mb": round(peak, 1), "budget_mb": round(700e6 / 2**20, 1),
               "batches": after["batches"] - before["batches"]}
    print("\nload test:", json.dumps(figures))
