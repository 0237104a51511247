"""`localllm bench --json` keeps the contract's schema; a tiny model keeps it quick."""

import json

from click.testing import CliRunner
from gguf import GGMLQuantizationType as Q

from localllm.cli import cli
from localllm.sweep import BATCH_SWEEP
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


def test_bench_sweep_writes_data_and_plot(tmp_path):
    path = write_tiny_model(tmp_path / "tiny.gguf", "llama", qtype=Q.Q8_0)
    r = CliRunner().invoke(cli, ["bench", str(path), "--sweep", "--sweep-lengths", "8,16", "-t", "1",
                                 "--out", str(tmp_path / "sw")])
    assert r.exit_code == 0, r.output
    data = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    kinds = {(p["kind"], p["x"], p["threads"]) for p in data["points"]}
    batch_sizes = {("batch", b, 1) for b in BATCH_SWEEP}
    assert kinds == {("prefill", 8, 1), ("prefill", 16, 1), ("decode", 8, 1), ("decode", 16, 1)} | batch_sizes
    assert all(p["tokens_per_s"] > 0 for p in data["points"])
    assert all(p["batch"] == (p["x"] if p["kind"] == "batch" else 1) for p in data["points"])
    png = tmp_path / "sw" / "sweep.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_batched_decode_rows(tmp_path):
    """-b: one tg row per batch size, all sequences' tokens together, through the engine."""
    path = write_tiny_model(tmp_path / "tiny.gguf", "llama", qtype=Q.Q8_0)
    r = CliRunner().invoke(cli, ["bench", str(path), "-p", "16", "-n", "8", "-r", "1", "-t", "1", "-b", "1,4",
                                 "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)["results"]
    assert [(x["test"], x["batch"]) for x in rows] == [("pp16", 1), ("tg8", 1), ("tg8", 4)]
    assert all(x["tokens_per_s"] > 0 and x["bound"].startswith(("memory", "compute")) for x in rows)
    assert rows[2]["n_tokens"] == 4 * 7  # every sequence's tokens after its first


def test_bench_with_a_draft_model_counts_guesses(tmp_path):
    """--draft runs the decode test through the speculative engine; with the model as its own
    draft every guess is kept (and --sweep refuses speculation)."""
    path = write_tiny_model(tmp_path / "tiny.gguf", "llama", qtype=Q.Q8_0)
    r = CliRunner().invoke(cli, ["bench", str(path), "-p", "16", "-n", "12", "-r", "1", "-t", "1",
                                 "--draft", str(path), "--draft-max", "3", "--json"])
    assert r.exit_code == 0, r.output
    tg = [x for x in json.loads(r.output)["results"] if x["test"].startswith("tg")]
    assert len(tg) == 1 and tg[0]["tokens_per_s"] > 0
    assert tg[0]["draft_tokens"] > 0 and tg[0]["accepted_tokens"] == tg[0]["draft_tokens"]
    r = CliRunner().invoke(cli, ["bench", str(path), "--sweep", "--lookup"])
    assert r.exit_code != 0 and "--sweep" in r.output
