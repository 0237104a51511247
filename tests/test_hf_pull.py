"""`hf://` models against a fake Hugging Face Hub on loopback.

The server mimics the endpoints huggingface_hub calls for a download: the
repo's file listing (`/api/models/{repo}` with `siblings`) and
`/{repo}/resolve/{revision}/{file}` (HEAD with X-Repo-Commit, ETag and
Content-Length; GET honouring Range).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner
from gguf import GGMLQuantizationType as Q

from localllm import hf_hub, hub
from localllm.cli import cli
from localllm.errors import DownloadError, GGUFError, ModelNotFound, UsageError
from tiny_models import write_tiny_model

COMMIT = "0123456789abcdef0123456789abcdef01234567"
OWNER_REPO = "acme/tiny-GGUF"


class FakeHub:
    """repos: {"owner/name": {"path/in/repo": bytes}}. Records every request."""

    def __init__(self, repos: dict[str, dict[str, bytes]]):
        self.repos = repos
        self.requests: list[tuple[str, str, str | None]] = []
        self.cut_next_get: set[str] = set()  # files whose next GET stops halfway, as a dropped connection would
        hub_ = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                hub_._serve(self, body=True)

            def do_HEAD(self):
                hub_._serve(self, body=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def downloads(self, name: str) -> list[str | None]:
        """The Range header of each GET of a file."""
        return [rng for m, p, rng in self.requests if m == "GET" and p.endswith("/" + name)]

    @staticmethod
    def _send(h, status: int, headers: dict[str, str], body: bytes = b"", send_body: bool = True) -> None:
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.end_headers()
        if send_body:
            h.wfile.write(body)

    def _not_found(self, h, code: str) -> None:
        body = json.dumps({"error": f"{code} (fake hub)"}).encode()
        self._send(h, 404, {"X-Error-Code": code, "X-Repo-Commit": COMMIT, "Content-Type": "application/json",
                            "Content-Length": str(len(body))}, body, h.command == "GET")

    def _serve(self, h, body: bool) -> None:
        path = h.path.split("?", 1)[0]
        self.requests.append((h.command, path, h.headers.get("Range")))
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/[^/]+)?", path)
        if m:
            files = self.repos.get(m.group(1))
            if files is None:
                return self._not_found(h, "RepoNotFound")
            data = json.dumps({"id": m.group(1), "sha": COMMIT,
                               "siblings": [{"rfilename": n} for n in files]}).encode()
            return self._send(h, 200, {"Content-Type": "application/json", "Content-Length": str(len(data))},
                              data, body)
        m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/[^/]+/(.+)", path)
        if not m or m.group(1) not in self.repos:
            return self._not_found(h, "RepoNotFound")
        content = self.repos[m.group(1)].get(m.group(2))
        if content is None:
            return self._not_found(h, "EntryNotFound")
        headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.sha256(content).hexdigest()}"',
                   "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        start = 0
        rng = re.fullmatch(r"bytes=(\d+)-", h.headers.get("Range") or "")
        if body and rng:
            start = int(rng.group(1))
            headers["Content-Range"] = f"bytes {start}-{len(content) - 1}/{len(content)}"
        part = content[start:]
        headers["Content-Length"] = str(len(part))
        if body and m.group(2) in self.cut_next_get:
            self.cut_next_get.discard(m.group(2))
            self._send(h, 206 if rng else 200, headers, part[: len(part) // 2])
            h.wfile.flush()
            h.close_connection = True  # the client sees a body shorter than Content-Length
            return
        self._send(h, 206 if rng else 200, headers, part, body)


@pytest.fixture(scope="module")
def ggufs(tmp_path_factory) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("ggufs")
    return {
        "tiny-Q8_0.gguf": write_tiny_model(d / "a.gguf", qtype=Q.Q8_0).read_bytes(),
        "tiny-Q4_0.gguf": write_tiny_model(d / "b.gguf", qtype=Q.Q4_0, seed=1).read_bytes(),
    }


@pytest.fixture
def hf_env(tmp_path, monkeypatch):
    """A temp model cache and HF home; the endpoint is set per test."""
    env = {"LOCALLLM_HOME": str(tmp_path / "home"), "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "0",
           "HF_HUB_DISABLE_TELEMETRY": "1", "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    import huggingface_hub.constants as constants

    # huggingface_hub read these at its import, maybe before this test set them
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-home" / "hub"))
    return env


def _models(env) -> Path:
    return Path(env["LOCALLLM_HOME"]) / "models"


def test_quant_picks_the_matching_file(hf_env, ggufs, monkeypatch):
    files = dict(ggufs, **{"README.md": b"# tiny\n"})
    with FakeHub({OWNER_REPO: files}) as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        path = hub.pull(f"hf://{OWNER_REPO}:q4_0")  # case-insensitive
        assert path == _models(hf_env) / "hf" / "acme" / "tiny-GGUF" / "tiny-Q4_0.gguf"
        assert path.read_bytes() == ggufs["tiny-Q4_0.gguf"]
        # resolve finds it in the cache without asking the hub again
        seen = len(fake.requests)
        assert hub.resolve(f"hf://{OWNER_REPO}:Q4_0") == path
        assert hub.resolve(f"hf://{OWNER_REPO}/tiny-Q4_0.gguf") == path
        assert len(fake.requests) == seen
        # only complete files are visible: nothing else landed beside it
        assert sorted(p.name for p in path.parent.iterdir()) == ["tiny-Q4_0.gguf"]


def test_resolve_pulls_a_named_file_on_first_use(hf_env, ggufs, monkeypatch):
    with FakeHub({OWNER_REPO: ggufs}) as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        path = hub.resolve(f"hf://{OWNER_REPO}/tiny-Q8_0.gguf", quiet=True)
        assert path.read_bytes() == ggufs["tiny-Q8_0.gguf"]
        assert fake.downloads("tiny-Q8_0.gguf") == [None]
        assert not any("/api/models/" in p for _, p, _ in fake.requests)  # a named file needs no listing


def test_interrupted_download_resumes_with_range(hf_env, ggufs, monkeypatch):
    with FakeHub({OWNER_REPO: ggufs}) as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        import huggingface_hub.constants as constants

        # small chunks, so the bytes before the cut reach the disk (the default is 10 MB)
        monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 4096)
        fake.cut_next_get.add("tiny-Q8_0.gguf")
        path = hub.pull(f"hf://{OWNER_REPO}/tiny-Q8_0.gguf", quiet=True)
        assert path.read_bytes() == ggufs["tiny-Q8_0.gguf"]
        first, second = fake.downloads("tiny-Q8_0.gguf")
        assert first is None
        resumed_at = int(re.fullmatch(r"bytes=(\d+)-", second).group(1))
        assert 0 < resumed_at <= len(ggufs["tiny-Q8_0.gguf"]) // 2  # it asked only for what it lacked


def test_selection_errors_list_the_candidates(hf_env, ggufs, monkeypatch):
    with FakeHub({OWNER_REPO: ggufs}) as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        with pytest.raises(UsageError, match="several .gguf files.*tiny-Q4_0.gguf, tiny-Q8_0.gguf"):
            hub.pull(f"hf://{OWNER_REPO}")
        with pytest.raises(ModelNotFound, match="matches 'Q6_K'.*tiny-Q4_0.gguf, tiny-Q8_0.gguf"):
            hub.pull(f"hf://{OWNER_REPO}:Q6_K")
        with pytest.raises(ModelNotFound, match="no Hugging Face repository acme/missing"):
            hub.pull("hf://acme/missing:Q4_0")
        with pytest.raises(ModelNotFound, match="has no file 'nope.gguf'"):
            hub.pull(f"hf://{OWNER_REPO}/nope.gguf")
    assert not (_models(hf_env) / "hf" / "acme").exists()


def test_the_only_gguf_is_picked_and_quant_tokens_win(hf_env, ggufs, monkeypatch):
    one = {"m-Q4_K.gguf": ggufs["tiny-Q4_0.gguf"], "m-Q4_K_M.gguf": ggufs["tiny-Q8_0.gguf"],
           "mmproj-m-f16.gguf": b"GGUF-projector"}
    with FakeHub({"acme/one": {"only.gguf": ggufs["tiny-Q8_0.gguf"], "config.json": b"{}"}, "acme/two": one}) as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        assert hub.pull("hf://acme/one").name == "only.gguf"
        # "Q4_K" is inside both names; the file where it is a whole token is meant
        assert hub.pull("hf://acme/two:Q4_K").read_bytes() == ggufs["tiny-Q4_0.gguf"]
        assert hub.pull("hf://acme/two:q4_k_m").read_bytes() == ggufs["tiny-Q8_0.gguf"]


def test_a_non_gguf_file_never_becomes_visible(hf_env, monkeypatch):
    with FakeHub({OWNER_REPO: {"fake.gguf": b"<html>not a model</html>"}}) as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        with pytest.raises(GGUFError, match="is not a GGUF file"):
            hub.pull(f"hf://{OWNER_REPO}/fake.gguf")
    repo_dir = _models(hf_env) / "hf" / "acme" / "tiny-GGUF"
    assert not (repo_dir / "fake.gguf").exists()


@pytest.mark.parametrize("spec, message", [
    ("hf://acme", "names no repository"),
    ("hf://acme/../x", "bad repository name"),
    ("hf://acme/repo/../../etc/passwd", "bad file path"),
    ("hf://acme/repo:Q4_0/x.gguf", "either :QUANT or /FILE"),
])
def test_malformed_specs_are_usage_errors(hf_env, spec, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        hub.resolve(spec)


def test_missing_extra_names_the_install_command(hf_env, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import now raises ImportError
    with pytest.raises(DownloadError, match=re.escape("pip install 'localllm[hf]'")):
        hub.pull(f"hf://{OWNER_REPO}:Q4_0")
    r = CliRunner().invoke(cli, ["info", f"hf://{OWNER_REPO}/x.gguf"])
    assert r.exit_code == 1 and "pip install 'localllm[hf]'" in r.output


def test_cli_pull_subprocess_prints_the_path_last(hf_env, ggufs, tmp_path):
    with FakeHub({OWNER_REPO: ggufs}) as fake:
        env = dict(os.environ, **hf_env, HF_ENDPOINT=fake.url)
        r = subprocess.run([sys.executable, "-m", "localllm", "pull", f"hf://{OWNER_REPO}:Q8_0"],
                           capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    path = Path(r.stdout.strip().splitlines()[-1])
    assert path == _models(hf_env) / "hf" / "acme" / "tiny-GGUF" / "tiny-Q8_0.gguf"
    assert path.read_bytes() == ggufs["tiny-Q8_0.gguf"]
