"""The `localllm` command line: parse, call the library, print. Nothing else.

Errors a user can cause end in one line on stderr and exit code 1 (2 for usage
errors); `--debug` shows the traceback instead.
"""

from __future__ import annotations

import json
import sys

import click

from . import hub
from .errors import LocalLLMError
from .progress import ProgressPrinter
from .speculative import DRAFT_MAX

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}


class _Group(click.Group):
    """Turns LocalLLMError (and anything unexpected) into one clear stderr line."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        """click's main, except that a usage error is one line too (no usage block)."""
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except click.UsageError as e:
            if type(e).__name__ == "NoArgsIsHelpError":  # bare `localllm`: the help text, as before
                e.show()
            else:
                where = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
                click.echo(f"error: {e.format_message()}{where}", err=True)
            sys.exit(e.exit_code)
        except click.ClickException as e:
            e.show()
            sys.exit(e.exit_code)
        except click.exceptions.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)  # an int is click's exit code for --help/--version

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except BrokenPipeError:
            # the reader went away (e.g. `| head`): stop quietly, as other Unix tools do
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)
        except LocalLLMError as e:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"error: {e}", err=True)
            sys.exit(e.exit_code)
        except Exception as e:  # an internal bug still gets one line, not a wall of text
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"error: {type(e).__name__}: {e} (run with --debug for the traceback)", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings=CONTEXT_SETTINGS)
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.version_option(package_name="localllm")
@click.pass_context
def cli(ctx, debug):
    """Run GGUF language models locally on the CPU."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def resolve_model(model: str | None) -> str:
    """MODEL argument -> local path, pulling a missing short name with a progress bar."""
    return str(hub.resolve(model, progress=ProgressPrinter()))


@cli.command()
@click.argument("name", metavar="NAME")
@click.option("--force", is_flag=True, help="Fetch again even if a verified copy exists.")
def pull(name, force):
    """Fetch a model, verify it, and cache it; the last line is its path.

    NAME is a short name (smollm2-135m, gemma3-270m) or a Hugging Face file:
    hf://OWNER/REPO/FILE, hf://OWNER/REPO:QUANT (e.g. :Q4_K_M) or hf://OWNER/REPO.
    """
    path = hub.pull(name, force=force, progress=ProgressPrinter())
    click.echo(str(path))


@cli.command()
@click.argument("model", required=False, metavar="MODEL")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info(model, as_json):
    """Architecture, size, tensor types, context and tokenizer of MODEL."""
    from .inspect import model_info, format_info

    facts = model_info(resolve_model(model))
    click.echo(json.dumps(facts, indent=2) if as_json else format_info(facts))


@cli.command()
@click.argument("model", metavar="MODEL")
@click.argument("text")
@click.option("--special", is_flag=True, help="Parse special-token text such as <|im_start|>.")
@click.option("--bos/--no-bos", default=False, help="Prepend BOS.")
def tokenize(model, text, special, bos):
    """Print the token ids of TEXT as a JSON list."""
    from .gguf import read_metadata
    from .text_input import utf8_safe
    from .tokenizer import tokenizer_from_metadata

    tok = tokenizer_from_metadata(read_metadata(resolve_model(model)))
    click.echo(json.dumps(tok.encode(utf8_safe(text), add_bos=bos, special=special)))


def sampling_options(f):
    """The sampling flags shared by run and chat (defaults are llama.cpp's)."""
    opts = [
        click.option("-n", "--max-tokens", "max_tokens", type=click.IntRange(min=1), default=128, show_default=True,
                     help="Maximum tokens to generate."),
        click.option("--temp", "temperature", type=click.FloatRange(min=0), default=0.8, show_default=True,
                     help="Temperature; 0 is greedy."),
        click.option("--top-k", type=int, default=40, show_default=True, help="Keep the k most likely tokens (0: off)."),
        click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=0.95, show_default=True,
                     help="Nucleus sampling mass."),
        click.option("--min-p", type=click.FloatRange(0, 1), default=0.05, show_default=True,
                     help="Drop tokens below min_p x the top probability."),
        click.option("--repeat-penalty", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True),
        click.option("--seed", type=click.IntRange(min=0), default=None, help="Seed for reproducible sampling."),
        click.option("-c", "--ctx-size", "n_ctx", type=click.IntRange(min=16), default=2048, show_default=True,
                     help="Context window in tokens."),
        click.option("-t", "--threads", type=click.IntRange(min=1), default=None,
                     help="Threads (default: $LOCALLLM_THREADS or all cores)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _params(**kw):
    from .sampling import SamplingParams

    return SamplingParams(**kw)


def open_llm(model, n_ctx, threads, speculation: dict | None = None):
    """Resolve and load a model, telling the user what the slow first run is doing.
    speculation: LLM's speculative keywords (from speculation_kwargs)."""
    from .api import LLM
    from .startup import first_run_notice

    path = resolve_model(model)
    with first_run_notice():
        llm = LLM(path, n_ctx=n_ctx, threads=threads, **(speculation or {}))
        llm.warmup()
    return llm


def speculative_options(f):
    """--draft, --lookup and --draft-max, shared by run, chat, serve and bench."""
    opts = [
        click.option("--draft", metavar="MODEL", default=None,
                     help="Speculative decoding with a draft model: a smaller model with the same "
                          "vocabulary guesses, the model verifies (greedy output unchanged)."),
        click.option("--lookup", is_flag=True,
                     help="Speculative decoding by prompt lookup: guess the next tokens from text seen "
                          "before, verify them in one step (same output, faster when the answer repeats "
                          "its input)."),
        click.option("--draft-max", type=click.IntRange(min=1), default=DRAFT_MAX, show_default=True,
                     help="Longest guess; the governor picks the length each step."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def speculation_kwargs(draft, lookup: bool, draft_max: int) -> dict:
    """LLM's speculative keywords for --draft / --lookup / --draft-max."""
    from .errors import UsageError

    if draft is not None and lookup:
        raise UsageError("--draft and --lookup are two ways to guess; choose one")
    if draft is not None:
        return {"draft_model": resolve_model(draft), "draft_max": draft_max}
    return {"speculative": "lookup", "draft_max": draft_max} if lookup else {}


def speculation_line(st) -> str:
    if not st.draft_steps:
        return ""
    return (f" | speculation: {st.accepted_tokens}/{st.draft_tokens} guesses accepted "
            f"({100 * st.acceptance_rate:.0f}%), mean guess {st.mean_draft_len:.1f}")


def run_input(llm, prompt: str, raw: bool) -> tuple[str | list[int], tuple[str, ...]]:
    """What `run` feeds the model, and the extra stop strings that go with it.

    A model with a chat template of its own gets PROMPT as one user turn plus the
    template's generation prompt (its end-of-turn token is among the stop ids);
    --raw, and a model without a template, continue PROMPT as plain text."""
    from .chat import chat_template_from_metadata

    if raw or chat_template_from_metadata(llm.gguf.metadata) is None:
        return prompt, ()
    return llm.chat_ids([{"role": "user", "content": prompt}]), llm.chat_stops


@cli.command()
@click.argument("model", metavar="MODEL")
@click.argument("prompt")
@sampling_options
@click.option("--stop", multiple=True, help="Stop string (repeatable).")
@speculative_options
@click.option("--raw", is_flag=True, help="Plain completion: continue PROMPT as it is, without the chat template.")
@click.option("--stats", is_flag=True, help="Print load time, TTFT, prefill and decode speed to stderr.")
def run(model, prompt, max_tokens, temperature, top_k, top_p, min_p, repeat_penalty, seed, n_ctx, threads,
        stop, draft, lookup, draft_max, raw, stats):
    """Answer PROMPT ('-' reads stdin), streamed to stdout.

    PROMPT is one user message of the model's chat template when it has one;
    --raw (and a model without a template) continues PROMPT as plain text."""
    import time

    from .errors import UsageError
    from .generation import Stats
    from .text_input import read_text, utf8_safe

    speculation = speculation_kwargs(draft, lookup, draft_max)
    prompt = read_text() if prompt == "-" else utf8_safe(prompt)
    if not prompt:
        raise UsageError("the prompt is empty")
    params = _params(max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                     repeat_penalty=repeat_penalty, seed=seed, stop=stop)
    t0 = time.perf_counter()
    llm = open_llm(model, n_ctx, threads, speculation)
    load_s = time.perf_counter() - t0
    model_input, chat_stops = run_input(llm, prompt, raw)
    st = Stats()
    kw = {k: getattr(params, k) for k in ("max_tokens", "temperature", "top_k", "top_p", "min_p", "repeat_penalty",
                                           "seed", "stop")}
    kw["stop"] += chat_stops
    for piece in llm.stream(model_input, stats=st, **kw):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    if stats:
        click.echo(f"load {load_s:.2f} s | prompt {st.prompt_tokens} tok | TTFT {st.time_to_first_token_s * 1000:.1f} ms"
                   f" | prefill {st.prefill_tokens_per_s:.1f} tok/s | decode {st.decode_tokens_per_s:.1f} tok/s"
                   f" ({st.completion_tokens} tok){speculation_line(st)}", err=True)


@cli.command()
@click.argument("model", required=False, metavar="[MODEL]")
@sampling_options
@click.option("--system", default=None, help="System prompt.")
@click.option("--stats", is_flag=True, help="Print timings after each answer.")
@speculative_options
def chat(model, max_tokens, temperature, top_k, top_p, min_p, repeat_penalty, seed, n_ctx, threads, system, stats,
         draft, lookup, draft_max):
    """Chat with MODEL (default: smollm2-135m) using its chat template."""
    from .repl import ChatLoop

    speculation = speculation_kwargs(draft, lookup, draft_max)
    params = _params(max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                     repeat_penalty=repeat_penalty, seed=seed)
    llm = open_llm(model, n_ctx, threads, speculation)
    loop = ChatLoop(llm, params, show_stats=stats)
    loop.system = system
    loop.run()


@cli.command()
@click.argument("model", metavar="MODEL")
@click.option("-f", "--file", "path", type=click.Path(exists=True, dir_okay=False), required=True,
              help="Text file to score.")
@click.option("-c", "--ctx-size", "n_ctx", type=click.IntRange(min=8), default=512, show_default=True)
@click.option("-t", "--threads", type=click.IntRange(min=1), default=None)
def perplexity(model, path, n_ctx, threads):
    """llama.cpp's perplexity of MODEL on a text file; the last line is 'PPL = <value>'."""
    from pathlib import Path

    llm = open_llm(model, max(n_ctx, 16), threads)
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    ppl = llm.perplexity(text, n_ctx=n_ctx, progress=ProgressPrinter(unit="chunks"))
    click.echo(f"PPL = {ppl:.4f}")


@cli.command()
@click.argument("src", metavar="IN", type=click.Path(exists=True, dir_okay=False))
@click.argument("dst", metavar="OUT", type=click.Path(dir_okay=False))
@click.option("--type", "qtype", required=True,
              type=click.Choice(["f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1"], case_sensitive=False),
              help="Target type for 2-D weight tensors.")
def quantize(src, dst, qtype):
    """Write a copy of IN with its weight matrices converted to TYPE."""
    from pathlib import Path

    from .errors import UsageError
    from .gguf import open_gguf
    from .quant.convert import quantize_gguf

    if Path(src).resolve() == Path(dst).resolve():
        raise UsageError("OUT must differ from IN")
    open_gguf(src)  # validate before spending minutes on it
    bar = ProgressPrinter(unit="tensors")
    quantize_gguf(src, dst, qtype.lower(), progress=lambda done, total: bar("quantize", done, total))
    click.echo(dst)


@cli.command()
@click.argument("model", required=False, metavar="[MODEL]")
@click.option("-p", "--n-prompt", type=click.IntRange(min=0), default=512, show_default=True, help="Prompt tokens (pp test).")
@click.option("-n", "--n-gen", type=click.IntRange(min=0), default=128, show_default=True, help="Generated tokens (tg test).")
@click.option("-b", "--batch", default="1", show_default=True, help="Concurrent sequences for the decode test, comma-separated (e.g. 1,4,16); "
                   "each runs prompts of min(-p, 128) tokens through the batching engine.")
@click.option("-r", "--reps", type=click.IntRange(min=1), default=3, show_default=True, help="Repetitions per test.")
@click.option("-t", "--threads", type=click.IntRange(min=1), default=None)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--sweep", is_flag=True, help="Sweep prompt length, cached context, thread count and batch size; "
                                            "writes sweep.json and sweep.png (needs matplotlib).")
@click.option("--sweep-lengths", default="64,128,256,512,1024,2048", show_default=True,
              help="Prompt lengths and cached contexts for --sweep.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=".", show_default=True,
              help="Where --sweep writes its files.")
@speculative_options
def bench(model, n_prompt, n_gen, batch, reps, threads, as_json, sweep, sweep_lengths, out_dir, draft, lookup,
          draft_max):
    """Prompt-processing and generation speed, against this machine's limits.

    With --draft or --lookup the decode test runs through the engine with that
    speculation (greedy, random-token prompts as llama-bench uses) and reports the
    guesses kept."""
    from .bench import apply_roofline, bench_report, format_report, run_batched_decode, run_bench
    from .errors import UsageError

    speculation = speculation_kwargs(draft, lookup, draft_max)
    if sweep:
        if speculation:
            raise UsageError("--sweep measures plain decoding; --draft and --lookup go with the plain bench")
        return _bench_sweep(model, sweep_lengths, threads, out_dir)

    try:
        batches = [int(b) for b in batch.split(",") if b.strip()]
    except ValueError:
        raise UsageError(f"-b takes comma-separated integers, got {batch!r}") from None
    if not batches or min(batches) < 1:
        raise UsageError(f"-b takes positive batch sizes, got {batch!r}")
    if n_prompt == 0 and n_gen == 0:
        raise UsageError("nothing to measure: -p and -n are both 0")
    llm = open_llm(model, max(n_prompt, n_gen + 1, 16), threads, speculation)
    if batches == [1] and not speculation:
        results, limits = llm.on_engine(run_bench, llm, n_prompt, n_gen, reps)
    else:  # pp on one sequence, then decode at every batch size through the engine
        if n_gen < 2:
            raise UsageError("-b needs -n of at least 2 (decode is timed after the first token)")
        results, limits = llm.on_engine(run_bench, llm, n_prompt, 0, reps)
        llm.close()  # the batched runs start engines of their own: one kernel thread at a time
        batched, _ = run_batched_decode(llm, batches, n_prompt=min(n_prompt, 128) or 128, n_gen=n_gen,
                                        reps=min(reps, 2), limits=limits, speculative=bool(speculation))
        results += batched
        apply_roofline(results, limits)
    report = bench_report(llm, results, limits)
    click.echo(json.dumps(report, indent=2) if as_json else format_report(report))


def _bench_sweep(model, lengths_text, threads, out_dir):
    from pathlib import Path

    import numba

    from .bench import run_batched_decode
    from .errors import UsageError
    from .sweep import BATCH_SWEEP, batch_points, run_sweep, write_sweep

    try:
        lengths = sorted({int(v) for v in lengths_text.split(",") if v.strip()})
    except ValueError:
        raise UsageError(f"--sweep-lengths takes comma-separated integers, got {lengths_text!r}") from None
    if not lengths or lengths[0] < 1:
        raise UsageError("--sweep-lengths needs positive lengths")
    max_threads = threads or numba.config.NUMBA_NUM_THREADS
    thread_counts = sorted({1, max_threads} | {t for t in (2, 4, 8, 16) if t < max_threads})
    llm = open_llm(model, lengths[-1] + 32, max_threads)
    # on the engine thread: one kernel thread at a time; 8 is a nearly empty cache
    points = llm.on_engine(run_sweep, llm, lengths, sorted({8} | set(lengths)), thread_counts)
    llm.close()  # the batched runs start engines of their own
    batched, _ = run_batched_decode(llm, BATCH_SWEEP, n_prompt=128, n_gen=32, reps=1)
    points += batch_points(batched, max_threads)
    data, png = write_sweep(points, f"{llm.path.name}: where the time goes", Path(out_dir))
    for p in points:
        extra = f", TTFT {p.ttft_ms:.0f} ms" if p.kind == "prefill" else ""
        if p.kind == "batch":
            extra = f", {1000 * p.batch / p.tokens_per_s:.1f} ms per token per sequence"
        click.echo(f"{p.kind:7} threads={p.threads} x={p.x:5d}: {p.tokens_per_s:8.1f} tok/s{extra}")
    click.echo(str(data))
    click.echo(str(png) if png else "matplotlib is not installed: no plot (pip install matplotlib)")


@cli.command()
@click.argument("model", required=False, metavar="[MODEL]")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback by default).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port (0: any free one).")
@click.option("--parallel", "-np", type=click.IntRange(min=1), default=8, show_default=True,
              help="Sequences decoded together; more requests wait in the queue.")
@click.option("--api-key", envvar="LOCALLLM_API_KEY", default=None,
              help="Require 'Authorization: Bearer KEY' on /v1 and the token routes (or $LOCALLLM_API_KEY).")
@click.option("--max-queue", type=click.IntRange(min=1), default=64, show_default=True,
              help="Requests held at once (running + waiting) before new ones get 429.")
@click.option("-c", "--ctx-size", "n_ctx", type=click.IntRange(min=16), default=4096, show_default=True,
              help="Context window per request in tokens; the KV pool holds --parallel of them.")
@click.option("-t", "--threads", type=click.IntRange(min=1), default=None,
              help="Threads (default: $LOCALLLM_THREADS or all cores).")
@click.option("--shutdown-timeout", type=click.FloatRange(min=0), default=10, show_default=True,
              help="Seconds running requests get to finish after SIGTERM before they are cancelled.")
@speculative_options
def serve(model, host, port, parallel, api_key, max_queue, n_ctx, threads, shutdown_timeout, draft, lookup,
          draft_max):
    """Serve MODEL (default: smollm2-135m) over an OpenAI-compatible HTTP API.

    Endpoints: /v1/models, /v1/completions, /v1/chat/completions (stream: true
    gives Server-Sent Events), /health, /metrics, /tokenize, /detokenize."""
    from pathlib import Path

    from .errors import UsageError
    from .server import serve as run_server

    speculation = speculation_kwargs(draft, lookup, draft_max)
    if api_key is not None and not api_key.strip():
        raise UsageError("--api-key is empty")
    path = resolve_model(model)
    name = hub.DEFAULT_MODEL if model is None else (Path(model).stem if model.endswith(".gguf") else model)
    run_server(path, name, host=host, port=port, parallel=parallel, api_key=api_key, n_ctx=n_ctx, threads=threads,
               max_queue=max_queue, shutdown_timeout=shutdown_timeout,
               speculative=speculation)


@cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_models(as_json):
    """The models in the cache: name, size, architecture, quant, path."""
    from .model_list import cached_models, format_table

    models = cached_models()
    click.echo(json.dumps([m.as_json() for m in models], indent=2) if as_json else format_table(models))


@cli.command("rm")
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
def remove_model(names):
    """Delete cached models, by short name, hf:// spec or path inside the cache."""
    from .model_list import remove

    for name in names:
        click.echo(f"removed {remove(name)}")


def main():
    cli(prog_name="localllm")
