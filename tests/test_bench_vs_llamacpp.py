"""scripts/bench_vs_llamacpp.py against a fake llama-bench: the command it runs, the JSON it
reads, the interleaving of rounds and what the appended table names."""

import importlib.util
import json
import sys
from argparse import Namespace
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench_vs_llamacpp.py"


@pytest.fixture(scope="module")
def bvl():
    spec = importlib.util.spec_from_file_location("bench_vs_llamacpp", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # no side effects: main() runs only as __main__
    return mod


FAKE = """#!{python}
# A stand-in for llama-bench -o json: logs its argv, prints logs on stderr, the JSON list on stdout.
import json, sys
args = sys.argv[1:]
with open({log!r}, "a") as f:
    f.write(json.dumps(["llama-bench"] + args) + "\\n")
def arg(flag):
    return int(args[args.index(flag) + 1])
pp, tg = arg("-p"), arg("-n")
print("load_backend: loaded CPU backend", file=sys.stderr)
common = {{"build_commit": "abc1234", "build_number": 4242, "backends": "CPU", "cpu_info": "Fake CPU",
          "model_filename": args[args.index("-m") + 1], "n_threads": arg("-t")}}
out = []
if pp:
    out.append(dict(common, n_prompt=pp, n_gen=0, avg_ts=1000.0 + pp, stddev_ts=0.0))
if tg:
    out.append(dict(common, n_prompt=0, n_gen=tg, avg_ts=50.0 + tg, stddev_ts=0.0))
print(json.dumps(out, indent=2))
"""


@pytest.fixture
def fake_bench(tmp_path):
    log = tmp_path / "calls.log"
    exe = tmp_path / "llama-bench"
    exe.write_text(FAKE.format(python=sys.executable, log=str(log)))
    exe.chmod(0o755)
    return exe, log


def test_parse_llama_bench_picks_pp_and_tg(bvl):
    entries = [
        {"n_prompt": 0, "n_gen": 128, "avg_ts": 95.5, "build_commit": "deadbee", "backends": "CPU"},
        {"n_prompt": 512, "n_gen": 0, "avg_ts": 301.25},
    ]
    r = bvl.parse_llama_bench("some log line\n" + json.dumps(entries) + "\n")
    assert r["pp_tps"] == 301.25 and r["tg_tps"] == 95.5
    assert "deadbee" in r["build"]
    with pytest.raises(ValueError):
        bvl.parse_llama_bench(json.dumps(entries[1:]))  # no tg entry
    with pytest.raises(ValueError):
        bvl.parse_llama_bench("error: failed to load model\n")


def test_llama_bench_round_runs_the_binary(bvl, fake_bench):
    exe, log = fake_bench
    r = bvl.llama_bench_round(str(exe), "/models/m.gguf", 32, 8, 2)
    assert r["pp_tps"] == 1032.0 and r["tg_tps"] == 58.0
    assert r["ttft_ms"] == pytest.approx(1000 * 32 / 1032.0)
    assert r["rss_mib"] > 0 and "abc1234" in r["build"]
    (call,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert call == ["llama-bench", "-m", "/models/m.gguf", "-t", "2", "-p", "32", "-n", "8", "-r", "1", "-o", "json"]


def test_exactly_one_llama_is_required(bvl, monkeypatch, capsys):
    for argv in (["m"], ["m", "--llama-bench", "x", "--llama-python", "y"]):
        monkeypatch.setattr(sys, "argv", ["bench_vs_llamacpp.py", *argv])
        with pytest.raises(SystemExit) as e:
            bvl.main()
        assert e.value.code == 2
    assert "--llama-bench" in capsys.readouterr().err


def test_cpu_model_reads_the_first_model_name(bvl, tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Fake Xeon 9999 @ 2.0GHz\nprocessor\t: 1\n"
                    "model name\t: Other CPU\n")
    assert bvl.cpu_model(str(info)) == "Fake Xeon 9999 @ 2.0GHz"
    assert bvl.cpu_model(str(tmp_path / "missing"))  # falls back to platform's name


def test_main_interleaves_and_names_cpu_flavour_threads(bvl, fake_bench, tmp_path, monkeypatch):
    exe, log = fake_bench
    from localllm import hub

    machine = {"read_gb_s": 20.0, "sgemm_gflop_s": 60.0, "int8_gop_s": 45.0}

    def fake_localllm_round(model, pp, tg, threads):
        with open(log, "a") as f:
            f.write(json.dumps(["localllm", model, pp, tg, threads]) + "\n")
        return {"pp_tps": 2064.0, "tg_tps": 29.0, "ttft_ms": 1000 * pp / 2064.0, "layer": "omp",
                "kernels": "avx2", "machine": machine}

    monkeypatch.setattr(hub, "resolve", lambda name: Path("/models") / name)
    monkeypatch.setattr(bvl, "localllm_round", fake_localllm_round)
    monkeypatch.setattr(bvl, "localllm_rss", lambda *a: 300.0)
    out = tmp_path / "bench.md"
    monkeypatch.setattr(sys, "argv", ["bench_vs_llamacpp.py", "m.gguf", "--threads", "3", "--pp", "32", "--tg", "8",
                                      "--rounds", "2", "--llama-bench", str(exe), "--append", str(out)])
    real_run = bvl.run_measured
    # the one-token start run of localllm is replaced; llama-bench's goes to the fake
    monkeypatch.setattr(bvl, "run_measured",
                        lambda cmd: ("", 0.5, 100.0) if cmd[:3] == [sys.executable, "-m", "localllm"] else real_run(cmd))
    bvl.main()
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [c[0] for c in calls] == ["llama-bench", "localllm", "llama-bench", "localllm", "llama-bench"]
    assert calls[0][1:] == ["-m", "/models/m.gguf", "-t", "3", "-p", "32", "-n", "8", "-r", "1", "-o", "json"]
    assert "--no-warmup" in calls[-1] and calls[-1][calls[-1].index("-p") + 1] == "1"  # the start-time run
    text = out.read_text()
    assert f"CPU: {bvl.cpu_model()}" in text
    assert f"native llama-bench `{exe}`" in text and "abc1234" in text
    assert "3 threads for both" in text and "### m.gguf, 3 threads" in text
    assert "45 GOP/s int8" in text
    assert "| pp32 (t/s) | 2064.00 | 1032.00 | 2.00x |" in text
    assert "| tg8 (t/s) | 29.00 | 58.00 | 0.50x |" in text
    assert f"--llama-bench {exe}" in text  # the reproduce command


def test_flavour_names_llama_cpp_python_and_version(bvl, tmp_path):
    fake_py = tmp_path / "py"
    fake_py.write_text(f"#!{sys.executable}\nprint('0.3.99')\n")  # answers the version query
    fake_py.chmod(0o755)
    args = Namespace(llama_bench=None, llama_python=str(fake_py), note="AVX2 build")
    assert bvl.llama_flavour(args, {}) == f"llama-cpp-python 0.3.99 (`{fake_py}`), AVX2 build"
