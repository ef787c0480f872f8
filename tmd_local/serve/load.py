"""Load on a running `tmd serve`: many concurrent clients, each sending valid, malformed, oversized
and slow requests, with what each should get back checked (scripts/load_serve.py drives it, and a
small version runs in tests/serve/test_load.py).

Only the standard library: a client is a thread with its own connections, and a slow client is a
raw socket sending its headers a few bytes at a time. Every request ends in one Outcome; one whose
status is not what its kind expects is a violation.
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import statistics
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlparse

KINDS = {"valid": 0.55, "malformed": 0.2, "oversized": 0.1, "slow": 0.15}  # the mix, by weight
EXPECTED = {"valid": {200, 429}, "malformed": {422}, "oversized": {413}, "slow": {408, None}}
QUESTIONS = ["Is {n} an even number?\nA. yes\nB. no", "Could a penguin live in the Sahara? ({n})\nA. yes\nB. no",
             "Is water wet? ({n})\nA. yes\nB. no"]
MALFORMED = [b"{not json", b'{"model": "drd"}', b'{"model": "drd", "messages": []}', b"[1, 2, 3]",
             b'{"model": "drd", "messages": [{"role": "user", "content": "no options here"}]}',
             b'{"model": "drd", "messages": [{"role": "user", "content": "q?\\nA. a\\nB. b"}], "max_tokens": -1}']


@dataclass
class Outcome:
    kind: str
    status: int | None  # None: the server closed the connection without a reply
    seconds: float
    problem: str = ""   # why this outcome breaks the promise ("" when it keeps it)


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0
    peak_rss_mb: float = 0.0

    @property
    def violations(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.problem]

    def count(self, kind: str, status: int | None = ...) -> int:
        return sum(o.kind == kind and (status is ... or o.status == status) for o in self.outcomes)

    def latencies(self, kind: str = "valid", status: int = 200) -> list[float]:
        return sorted(o.seconds for o in self.outcomes if o.kind == kind and o.status == status)

    def summary(self) -> dict:
        answered = self.latencies()
        return {"seconds": round(self.seconds, 1), "requests": len(self.outcomes),
                "by_kind": {k: {str(s): sum(o.kind == k and o.status == s for o in self.outcomes)
                                for s in sorted({o.status for o in self.outcomes if o.kind == k}, key=str)}
                            for k in KINDS},
                "answered_per_second": round(len(answered) / self.seconds, 2) if self.seconds else 0.0,
                "p50_s": percentile(answered, 50), "p95_s": percentile(answered, 95),
                "peak_rss_mb": round(self.peak_rss_mb, 1), "violations": len(self.violations)}


def percentile(values: list[float], pct: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))], 3)


class Target:
    """Where the server is and how requests are shaped for it."""

    def __init__(self, url: str, *, max_tokens: int = 8, body_limit: int = 4 * 1024 * 1024,
                 request_timeout: float = 30.0, reply_timeout: float = 600.0):
        parsed = urlparse(url)
        self.host, self.port = parsed.hostname, parsed.port
        self.max_tokens, self.body_limit = max_tokens, body_limit
        self.request_timeout, self.reply_timeout = request_timeout, reply_timeout

    def post(self, body: bytes) -> tuple[int, bytes, dict]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.reply_timeout)
        try:
            conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
            reply = conn.getresponse()
            return reply.status, reply.read(), dict(reply.getheaders())
        finally:
            conn.close()


def valid(target: Target, rng: random.Random) -> Outcome:
    text = rng.choice(QUESTIONS).format(n=rng.randrange(10_000))
    body = json.dumps({"model": "drd", "max_tokens": target.max_tokens,
                       "messages": [{"role": "user", "content": text}]}).encode()
    started = time.monotonic()
    try:
        status, data, headers = target.post(body)
    except OSError as e:
        return Outcome("valid", None, time.monotonic() - started, f"no reply ({e})")
    seconds = time.monotonic() - started
    problem = ""
    if status == 200:
        trace = json.loads(data)["tmd"]["trace"]
        if trace["question"]["question"] != text.split("\n")[0] or trace["answer"] not in ("A", "B", None):
            problem = "answered another question, or with no answer"
    elif status == 429:
        if int(headers.get("retry-after", headers.get("Retry-After", "0"))) < 1:
            problem = "429 without Retry-After"
    else:
        problem = f"status {status}: {data[:200]!r}"
    return Outcome("valid", status, seconds, problem)


def malformed(target: Target, rng: random.Random) -> Outcome:
    started = time.monotonic()
    try:
        status, data, _ = target.post(rng.choice(MALFORMED))
    except OSError as e:
        return Outcome("malformed", None, time.monotonic() - started, f"no reply ({e})")
    problem = "" if status == 422 and b"Traceback" not in data else f"status {status}: {data[:200]!r}"
    return Outcome("malformed", status, time.monotonic() - started, problem)


def oversized(target: Target, rng: random.Random) -> Outcome:
    """Declares twice the limit and sends the first 64 KiB of it: the 413 must come at once."""
    started = time.monotonic()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {target.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {2 * target.body_limit}\r\nConnection: close\r\n\r\n").encode()
    status, problem = _raw(target, head + b" " * 65536, wait=10)
    if status != 413:
        problem = problem or f"status {status}"
    return Outcome("oversized", status, time.monotonic() - started, problem)


def slow(target: Target, rng: random.Random) -> Outcome:
    """Sends its headers a few bytes every 0.5 s: it must be answered 408 (or dropped) near the
    server's request timeout, never served and never kept."""
    started = time.monotonic()
    sock = socket.create_connection((target.host, target.port), timeout=10)
    try:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        while time.monotonic() - started < target.request_timeout + 10:
            try:
                sock.sendall(b"X-Slow: a\r\n"[: rng.randint(1, 4)])
            except OSError:
                break
            sock.settimeout(0.5)
            try:
                if sock.recv(1, socket.MSG_PEEK):
                    break
            except socket.timeout:
                continue
            except OSError:
                break
        status = _status(_read_all(sock, 5))
    finally:
        sock.close()
    seconds = time.monotonic() - started
    problem = "" if status in (408, None) and seconds < target.request_timeout + 5 else \
        f"status {status} after {seconds:.1f} s"
    return Outcome("slow", status, seconds, problem)


def _raw(target: Target, data: bytes, wait: float) -> tuple[int | None, str]:
    sock = socket.create_connection((target.host, target.port), timeout=10)
    try:
        try:
            sock.sendall(data)
        except OSError:
            pass  # refused while sending: the reply may still be there to read
        return _status(_read_all(sock, wait)), ""
    except OSError as e:
        return None, f"no reply ({e})"
    finally:
        sock.close()


def _read_all(sock: socket.socket, seconds: float) -> bytes:
    sock.settimeout(seconds)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
            if b"\r\n\r\n" in data and b"content-length" in data.lower():
                head, _, body = data.partition(b"\r\n\r\n")
                length = [line for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:")]
                if length and len(body) >= int(length[0].split(b":")[1]):
                    break
    except (socket.timeout, ConnectionResetError):
        pass
    return data


def _status(data: bytes) -> int | None:
    try:
        return int(data.split(b"\r\n", 1)[0].split()[1]) if data else None
    except (IndexError, ValueError):
        return None


SENDERS = {"valid": valid, "malformed": malformed, "oversized": oversized, "slow": slow}


class RssWatch:
    """The server's resident memory, sampled every 0.2 s from /proc, highest kept."""

    def __init__(self, pid: int):
        self.pid, self.peak_mb, self._stop = pid, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> "RssWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            try:
                with open(f"/proc/{self.pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            self.peak_mb = max(self.peak_mb, int(line.split()[1]) / 1024)
            except OSError:
                return


def run_load(target: Target, *, clients: int, seconds: float, kinds: dict[str, float] = KINDS,
             pid: int | None = None, seed: int = 0) -> Report:
    """`clients` threads, each sending requests of `kinds` (by weight) until `seconds` have passed;
    a client refused with 429 waits its Retry-After (at most 1 s) as a polite client would."""
    report = Report()
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        names, weights = list(kinds), list(kinds.values())
        while time.monotonic() < deadline:
            outcome = SENDERS[rng.choices(names, weights)[0]](target, rng)
            with lock:
                report.outcomes.append(outcome)
            if outcome.status == 429:
                time.sleep(rng.uniform(0.2, 1.0))

    started = time.monotonic()
    watch = RssWatch(pid) if pid else None
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    if watch:
        watch.__enter__()
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        if watch:
            watch.__exit__()
            report.peak_rss_mb = watch.peak_mb
    report.seconds = time.monotonic() - started
    return report


def run_bench(target: Target, *, clients: int, requests_per_client: int, seed: int = 0) -> dict:
    """Only valid requests, each client sending its next as soon as its last is answered: requests/s
    and the latency a client sees, queueing included."""
    report = Report()
    lock = threading.Lock()

    def client(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        for _ in range(requests_per_client):
            outcome = valid(target, rng)
            with lock:
                report.outcomes.append(outcome)

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report.seconds = time.monotonic() - started
    answered = report.latencies()
    return {"clients": clients, "requests": len(report.outcomes), "answered": len(answered),
            "refused_429": report.count("valid", 429), "violations": len(report.violations),
            "requests_per_second": round(len(answered) / report.seconds, 2),
            "p50_s": percentile(answered, 50), "p95_s": percentile(answered, 95),
            "mean_s": round(statistics.fmean(answered), 3) if answered else None}
