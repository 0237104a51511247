"""`localllm bench --json` keeps the contract's schema; a tiny model keeps it quick."""

import json

from click.testing import CliRunner
from gguf import GGMLQuantizationType as Q

from localllm.cli import cli
from tiny_models import write_tiny_model


def test_bench_json_schema(tmp_path):
    path = write_tiny_model(tmp_path / "tiny.gguf", "llama", qtype=Q.Q8_0)
    r = CliRunner().invoke(cli, ["bench", str(path), "-p", "16", "-n", "8", "-r", "2", "-t", "1", "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["model"] == str(path) and rep["threads"] == 1
    assert rep["threading_layer"] in ("omp", "tbb", "workqueue")
    tests = {res["test"]: res for res in rep["results"]}
    assert set(tests) == {"pp16", "tg8"}
    for res in tests.values():
        assert res["batch"] == 1 and res["tokens_per_s"] > 0 and len(res["seconds"]) == 2
        assert res["bound"].startswith(("memory", "compute"))
    assert rep["machine"]["read_gb_s"] > 0 and rep["machine"]["sgemm_gflop_s"] > 0


def test_bench_rejects_bad_batch(tmp_path):
    path = write_tiny_model(tmp_path / "tiny.gguf", "llama", qtype=Q.Q8_0)
    r = CliRunner().invoke(cli, ["bench", str(path), "-b", "1,x"])
    assert r.exit_code == 2
    r = CliRunner().invoke(cli, ["bench", str(path), "-p", "0", "-n", "0"])
    assert r.exit_code == 2 and "nothing to measure" in r.output
