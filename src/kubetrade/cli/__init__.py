"""The ``kubetrade`` command line.

Every user mistake (bad config, unknown symbol, failed quality gate ...) ends
with one line on stderr -- ``kubetrade: error: <what> ... <how to fix>`` -- and
a non-zero exit code; tracebacks are for bugs only.

The app is assembled here from one module per command group (``kubetrade.cli.<module>``):
``pipeline`` (run), ``cluster`` (compile, submit), ``training`` (tune, train), ``data``
(validate, data info, check-config), ``registry`` (register), ``serving`` (serve, monitor);
``common`` holds the shared options and consoles. Commands are registered below in the order
``--help`` lists them.
"""

from __future__ import annotations

import typer

from kubetrade.cli.cluster import compile_, submit
from kubetrade.cli.common import console, out, redact
from kubetrade.cli.data import check_config, data_info, validate
from kubetrade.cli.pipeline import print_summary, run
from kubetrade.cli.registry import register
from kubetrade.cli.serving import monitor, serve
from kubetrade.cli.training import train, tune
from kubetrade.errors import KubetradeError

__all__ = ["app", "main", "console", "out", "print_summary", "redact"]

app = typer.Typer(
    name="kubetrade",
    help="Kubernetes-native MLOps for trading models: data -> quality gate -> features "
    "(Feast) -> splits -> CNN+LSTM / RL ensemble -> backtest -> registry. Runs locally "
    "through kfp's local runner, or on Kubeflow.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Inspect market data sources.", no_args_is_help=True)
app.add_typer(data_app, name="data")

app.command()(run)
app.command("compile")(compile_)
app.command()(tune)
app.command()(train)
app.command()(submit)
app.command()(validate)
data_app.command("info")(data_info)
app.command("check-config")(check_config)
app.command()(register)
app.command()(serve)
app.command()(monitor)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning KubetradeError into a one-line error."""
    from rich.markup import escape

    def error(message: str) -> None:
        # escaped: a message may quote user text with brackets ("[/x]" is rich markup)
        text = escape(redact(" ".join(message.split())))
        console.print(f"[bold red]kubetrade: error:[/] {text}", highlight=False, soft_wrap=True)

    try:
        app(args=argv, standalone_mode=False)
    except KubetradeError as exc:
        error(str(exc))
        return exc.exit_code
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        console.print("kubetrade: aborted")
        return 130
    except Exception as exc:
        # Usage errors (unknown option, bad value). Typer vendors its own click, so its
        # exceptions are not click's classes: recognise them by their interface.
        format_message = getattr(exc, "format_message", None)
        exit_code = getattr(exc, "exit_code", None)
        if not (callable(format_message) and isinstance(exit_code, int)):
            if type(exc).__module__.split(".")[0] in ("mlflow", "sqlalchemy"):
                # the store itself (bogus URI scheme, corrupt or locked database): not a bug
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
                error(f"MLflow store: {first}; check MLFLOW_TRACKING_URI / --tracking-uri")
                return 1
            raise  # a bug: the traceback is wanted
        ctx = getattr(exc, "ctx", None)  # only usage errors carry the command's context
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        error(f"{format_message()}{hint}")
        return exit_code
    return 0
