"""The OpenAI-compatible server, live on a loopback port, driven by the official openai client.

Each server is a real `localllm serve` subprocess on SmolLM2; the tests start
and stop it themselves (SIGTERM, which must exit cleanly).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from localllm import LLM

REFERENCE = json.loads((Path(__file__).parent / "reference" / "smollm2-135m-q4_1.json").read_text())
START_TIMEOUT_S = 600  # a cold numba cache compiles the kernels first
N_CTX = 512
MODEL = "smollm2-135m"


class ServerProcess:
    def __init__(self, model: str, *args: str):
        cmd = [sys.executable, "-m", "localllm", "serve", model, "--port", "0", "-t", "2", "-c", str(N_CTX),
               *args]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
        self.log: list[str] = []
        self._port = threading.Event()
        self.url = ""
        threading.Thread(target=self._read_log, daemon=True).start()
        if not self._port.wait(60):
            self.stop()
            raise AssertionError("the server printed no address:\n" + "".join(self.log))
        deadline = time.monotonic() + START_TIMEOUT_S
        while httpx.get(self.url + "/health").status_code != 200:
            assert self.proc.poll() is None, "the server exited:\n" + "".join(self.log)
            assert time.monotonic() < deadline, "the server never became ready"
            time.sleep(0.2)

    def _read_log(self) -> None:
        for line in self.proc.stderr:
            self.log.append(line)
            m = re.search(r"on (http://[\d.]+:\d+)/v1", line)
            if m and not self._port.is_set():
                self.url = m.group(1)
                self._port.set()

    def client(self, **kw) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=kw.pop("api_key", "unused"), max_retries=0, **kw)

    def metrics(self) -> dict[str, float]:
        """Prometheus samples by name+labels, e.g. 'localllm_requests_total{endpoint="chat",...}'."""
        out = {}
        for line in httpx.get(self.url + "/metrics").text.splitlines():
            if line and not line.startswith("#"):
                key, value = line.rsplit(" ", 1)
                out[key] = float(value)
        return out

    def total(self, name: str) -> float:
        return sum(v for k, v in self.metrics().items() if k == name or k.startswith(name + "{"))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


@pytest.fixture(scope="module")
def server(smollm2_path):
    # by name: the smollm2_path fixture has pulled it. With prompt-lookup speculation: every answer
    # below must still be what plain decoding gives (the guarded server runs without it)
    srv = ServerProcess(MODEL, "--parallel", "4", "--lookup")
    yield srv
    assert srv.stop() == 0, "".join(srv.log)


@pytest.fixture(scope="module")
def client(server):
    return server.client()


def test_health_and_models(server, client):
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]


def test_completion_equals_the_python_api(client, smollm2_path):
    """The HTTP path adds nothing to the arithmetic: the same text and logprobs as LLM.generate
    (which tests/test_reference.py holds to llama.cpp's greedy continuations)."""
    case = REFERENCE["generate"][0]
    n = len(case["greedy_ids"])
    out = client.completions.create(model=MODEL, prompt=case["prompt_ids"], max_tokens=n, temperature=0,
                                    logprobs=1)
    llm = LLM(str(smollm2_path), n_ctx=N_CTX, threads=2)
    try:
        local = llm.generate(case["prompt_ids"], max_tokens=n, temperature=0, logprobs=1)
    finally:
        llm.close()
    assert out.choices[0].text == local.text
    assert out.choices[0].logprobs.token_logprobs == [lp.logprob for lp in local.logprobs]
    assert out.choices[0].finish_reason == local.finish_reason == "length"
    assert out.usage.prompt_tokens == len(case["prompt_ids"]) and out.usage.completion_tokens == n


def test_completion_logprobs(client):
    out = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=6, temperature=0,
                                    logprobs=3)
    lp = out.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 6
    assert "".join(lp.tokens) == out.choices[0].text
    for chosen, top in zip(lp.token_logprobs, lp.top_logprobs):
        assert len(top) == 3 and chosen == max(top.values()) <= 0  # greedy takes the most likely token


def test_chat_and_streaming_chat_agree(client):
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a color."}]
    whole = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=20, temperature=0)
    chunks = list(client.chat.completions.create(model=MODEL, messages=messages, max_tokens=20, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content and text
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_chat_logprobs(client):
    out = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=8,
                                         temperature=0, logprobs=True, top_logprobs=2)
    content = out.choices[0].logprobs.content
    assert len(content) == out.usage.completion_tokens
    for item in content:
        assert item.logprob == item.top_logprobs[0].logprob and len(item.top_logprobs) == 2
        assert bytes(item.bytes).decode("utf-8", "replace") == item.token


def test_client_sees_openai_errors(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=-1)
    assert "max_tokens" in e.value.message
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-4o", prompt="x", max_tokens=1)


def _stream_chat(server, body: dict) -> tuple[str, list, dict]:
    """POST a streaming chat by hand; the concatenated text, the logprob entries and the usage."""
    text, lps, usage = [], [], None
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=120) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if not chunk["choices"]:
                usage = chunk["usage"]
                continue
            choice = chunk["choices"][0]
            text.append(choice["delta"].get("content") or "")
            if choice["logprobs"]:
                lps.extend(choice["logprobs"]["content"])
    return "".join(text), lps, usage


def test_sixteen_concurrent_clients_get_their_single_request_answers(server):
    prompts = ["Tell me about cats.", "What is 2+2?", "Write a haiku about rain.", "Say hello in French."]
    jobs = [(prompts[i % 4], 10 + 3 * i, i % 2 == 1) for i in range(16)]  # (prompt, max_tokens, stream)

    def ask(job) -> tuple[str, list, dict]:
        prompt, n, stream = job
        body = {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "max_tokens": n,
                "temperature": 0, "logprobs": True, "top_logprobs": 2}
        if stream:
            return _stream_chat(server, body)
        r = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=120).json()
        return r["choices"][0]["message"]["content"], r["choices"][0]["logprobs"]["content"], r["usage"]

    alone = [ask(job) for job in jobs]
    before = server.metrics()
    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(ask, jobs))
    after = server.metrics()
    for (text_a, lp_a, _), (text_b, lp_b, _) in zip(alone, together):
        assert text_b == text_a  # bit for bit: the logprobs below are compared with ==
        assert lp_b == lp_a
    assert all(len(lp) > 0 for _, lp, _ in together)

    def delta(name):
        return sum(after.get(k, 0) - before.get(k, 0) for k in set(after) | set(before)
                   if k == name or k.startswith(name + "{"))

    assert delta("localllm_requests_total") == 16
    assert delta("localllm_generation_tokens_total") == sum(u["completion_tokens"] for _, _, u in together)
    assert delta("localllm_prompt_tokens_total") == sum(u["prompt_tokens"] for _, _, u in together)
    assert [u["completion_tokens"] for _, _, u in together] == [len(lp) for _, lp, _ in together]
    assert after["localllm_requests_running"] == 0 and after["localllm_kv_blocks_used"] == 0


def test_disconnects_cancel_and_free_blocks(server):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Count to one thousand."}], "max_tokens": 400,
            "temperature": 0, "stream": True}

    def open_and_drop(i):
        with httpx.Client(timeout=60) as c, c.stream("POST", server.url + "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            for n, _ in enumerate(r.iter_lines()):
                if n >= 6:
                    break  # leave mid-stream; closing the client drops the connection

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(open_and_drop, range(8)))
    deadline = time.monotonic() + 30
    while True:
        m = server.metrics()
        if m["localllm_kv_blocks_used"] == 0 and m["localllm_requests_running"] == 0:
            break
        assert time.monotonic() < deadline, f"blocks still held after the clients left: {m}"
        time.sleep(0.2)
    assert m['localllm_requests_total{endpoint="chat",finish_reason="cancelled"}'] >= 8
    out = server.client().completions.create(model=MODEL, prompt="Hello", max_tokens=4, temperature=0)
    assert out.usage.completion_tokens == 4


def test_null_optional_fields_and_a_one_string_prompt_list(server):
    """Clients in other languages send OpenAI's optional fields as null: that means the default."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "temperature": 0,
            "n": None, "stream": None, "logprobs": None, "top_logprobs": None, "stop": None, "seed": None}
    r = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 200 and r.json()["choices"][0]["logprobs"] is None
    r = httpx.post(server.url + "/v1/completions", json={"prompt": ["Hello"], "max_tokens": 2, "echo": None},
                   timeout=60)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 2


BAD_INPUTS = [
    ("not json", b"{not json", 400, None),
    ("wrong type", {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": "ten"}, 400,
     "max_tokens"),
    ("unknown role", {"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}, 400, "role"),
    ("negative max_tokens", {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": -5}, 400,
     "max_tokens"),
    ("content not text", {"model": MODEL, "messages": [{"role": "user", "content": 5}]}, 400, "content"),
    ("no messages", {"model": MODEL, "messages": []}, 400, "messages"),
    ("prompt too long", {"model": MODEL, "messages": [{"role": "user", "content": "word " * (2 * N_CTX)}]}, 400,
     "context"),
    ("n > 1", {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "n": 3}, 400, "n=1"),
    ("bias key not a token", {"model": MODEL, "messages": [{"role": "user", "content": "x"}],
                              "logit_bias": {"999999999": 1}}, 400, "logit_bias"),
    ("bias key a superscript digit", {"model": MODEL, "messages": [{"role": "user", "content": "x"}],
                                      "logit_bias": {"\u00b2": 1}}, 400, "logit_bias"),
    ("body too large", b'{"messages": "' + b"x" * (5 << 20) + b'"}', 413, "larger"),
]


@pytest.mark.parametrize("name, body, status, words", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_gets_openai_error(server, name, body, status, words):
    if isinstance(body, bytes):
        kw = {"content": body, "headers": {"content-type": "application/json"}}
    else:
        kw = {"json": body}
    r = httpx.post(server.url + "/v1/chat/completions", timeout=30, **kw)
    assert r.status_code == status
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "code"} and len(err["message"]) <= 500
    if words:
        assert words in err["message"]
    assert httpx.get(server.url + "/health").status_code == 200


def test_body_too_large_without_a_declared_length(server):
    def chunks():  # chunked transfer: the limit is enforced while the body arrives
        for _ in range(6):
            yield b"x" * (1 << 20)

    r = httpx.post(server.url + "/v1/chat/completions", content=chunks(), timeout=30,
                   headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"


def test_tokenize_round_trip(server):
    case = max(REFERENCE["tokenize"], key=lambda c: len(c["ids"]))  # llama.cpp's ids for its longest text
    ids = httpx.post(server.url + "/tokenize", json={"content": case["text"]}).json()["tokens"]
    assert ids == case["ids"]
    back = httpx.post(server.url + "/detokenize", json={"tokens": ids}).json()["content"]
    assert back == case["text"]
    assert httpx.post(server.url + "/detokenize", json={"tokens": [10 ** 9]}).status_code == 400


@pytest.fixture(scope="module")
def guarded(smollm2_path):
    """A second server: an API key, one sequence at a time, a queue of one."""
    srv = ServerProcess(MODEL, "--parallel", "1", "--max-queue", "1", "--api-key", "s3cret")
    yield srv
    srv.stop()


def test_api_key(guarded):
    for key in ("", "wrong"):
        r = httpx.get(guarded.url + "/v1/models", headers={"Authorization": f"Bearer {key}"} if key else {})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        guarded.client(api_key="wrong").models.list()
    assert guarded.client(api_key="s3cret").models.list().data[0].id == MODEL
    assert httpx.get(guarded.url + "/health").status_code == 200  # readiness needs no key


def test_a_client_that_leaves_a_whole_answer_frees_its_place(guarded):
    """Not streaming: the server notices the disconnect while generating, cancels, and the
    queue of one is free again."""
    headers = {"Authorization": "Bearer s3cret"}
    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 400, "temperature": 0, "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(guarded.url + "/v1/completions", headers=headers, json=body, timeout=1.0)
    deadline = time.monotonic() + 30
    while True:
        r = httpx.post(guarded.url + "/v1/completions", headers=headers, timeout=60,
                       json={"model": MODEL, "prompt": "Hi", "max_tokens": 2})
        if r.status_code == 200:
            break
        assert r.status_code == 429 and time.monotonic() < deadline, r.text
        time.sleep(0.2)
    m = guarded.metrics()
    assert m['localllm_requests_total{endpoint="completions",finish_reason="cancelled"}'] >= 1


def test_full_queue_gets_429_then_sigterm_finishes_the_running_stream(guarded):
    headers = {"Authorization": "Bearer s3cret"}
    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 48, "temperature": 0, "stream": True}
    lines = []
    with httpx.stream("POST", guarded.url + "/v1/completions", json=body, headers=headers, timeout=60) as r:
        it = r.iter_lines()
        lines.append(next(it))  # the request is running and holds the only place
        second = httpx.post(guarded.url + "/v1/completions", headers=headers, json={**body, "stream": False})
        assert second.status_code == 429 and second.json()["error"]["type"] == "rate_limit_error"
        guarded.proc.send_signal(signal.SIGTERM)  # graceful: the running stream still completes
        lines.extend(it)
    lines = [x for x in lines if x]  # events are separated by blank lines
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(x[6:]) for x in lines if x.startswith("data: {")]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert guarded.proc.wait(60) == 0


def test_health_reports_loading_then_the_load_error():
    """/health answers while the model loads, and says why when loading fails (no model needed)."""
    from fastapi.testclient import TestClient

    from localllm.server import ServerConfig, create_app

    release = threading.Event()

    def load():
        release.wait(30)
        raise RuntimeError("no such file: missing.gguf")

    app = create_app(ServerConfig("missing"), load)
    with TestClient(app) as c:
        assert c.get("/health").status_code == 503 and c.get("/health").json()["status"] == "loading"
        r = c.post("/v1/completions", json={"prompt": "x"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_not_ready"
        release.set()
        deadline = time.monotonic() + 10
        while c.get("/health").json()["status"] == "loading" and time.monotonic() < deadline:
            time.sleep(0.05)
        body = c.get("/health").json()
        assert body == {"status": "error", "message": "no such file: missing.gguf"}
