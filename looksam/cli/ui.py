"""`looksam-bench ui`: open the MLflow UI on the sweeps' tracking store, locally."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.markup import escape

from looksam.cli._console import console, fail
from looksam.sweeps.redact import redact_url
from looksam.sweeps.spec import SpecError, load_spec
from looksam.sweeps.tracking import (
    DEFAULT_TRACKING_URI,
    experiment_url,
    list_experiments,
    sqlite_db_path,
)

#: Seconds MLflow gets to shut down after Ctrl-C before it is killed.
_STOP_TIMEOUT = 10.0
#: Ctrl-C, a plain ``kill`` and a closing terminal all stop MLflow. SIGINT is named too: a process
#: started with SIGINT ignored (a background job of a script, some CI runners) would otherwise
#: inherit that and never stop on Ctrl-C.
_STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)
#: Experiments listed by URL when no sweep is named; more are left to the UI's list.
_LISTED = 10


#: How the tracking store reaches ``mlflow ui``: its environment, never its command line, which
#: any local user can read (``ps``, ``/proc/PID/cmdline``) and which may hold a password.
STORE_VARIABLE = "MLFLOW_BACKEND_STORE_URI"


def ui_command(host: str, port: int) -> list[str]:
    """The MLflow UI server command line (``mlflow ui`` serves the UI and REST API offline); the
    store it serves comes from :func:`ui_environment`."""
    return [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",  # one local reader; MLflow's default of 4 processes only costs memory here
    ]


def ui_environment(tracking_uri: str) -> dict[str, str]:
    """The environment ``mlflow ui`` runs in: this one, the store's URI, and no job runner."""
    env = dict(os.environ)
    env[STORE_VARIABLE] = tracking_uri
    # MLflow's background job runner (GenAI evaluation jobs) is not needed to browse runs; without
    # it the UI starts twice as fast and runs 2 processes instead of 9.
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    return env


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """A terminal closing or a plain ``kill`` stops MLflow as Ctrl-C does, leaving no orphan."""
    raise KeyboardInterrupt


def _stop(process: subprocess.Popen[bytes], own_group: bool) -> None:
    """SIGTERM MLflow and its uvicorn child; SIGKILL if they are still up after a while."""
    if own_group:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    else:
        process.terminate()
    try:
        process.wait(timeout=_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        if own_group:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
        process.wait()


def is_loopback(host: str) -> bool:
    """True when ``host`` is reachable from this machine only (127.0.0.0/8, ::1, localhost).

    ``0.0.0.0``, ``::``, a LAN address or any other host name exposes the UI to the network.
    """
    name = host.strip().strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _sweep_links(tracking_uri: str, sweep: str | None, base_url: str) -> None:
    """Print the sweep's experiment page (opened on its runs), or every sweep's if none given."""
    found = list_experiments(tracking_uri)
    if sweep is None:
        links = [(n, i) for n, i in found.items() if n != "Default"][-_LISTED:]  # the newest
    elif sweep in found:
        links = [(sweep, found[sweep])]
    else:
        console.print(
            f"[yellow]no experiment {escape(repr(sweep))} in this store yet[/]: "
            "the UI lists the others",
            highlight=False,
        )
        return
    for name, experiment_id in links:
        url = experiment_url(base_url, experiment_id)
        console.print(
            f"sweep [bold]{escape(name)}[/]: [link={url}]{url}[/]", highlight=False, soft_wrap=True
        )


def ui(
    spec_path: Annotated[
        Path | None,
        typer.Argument(
            metavar="[SPEC]",
            help="A sweep spec: its MLflow store and experiment (the URL of its runs is printed).",
        ),
    ] = None,
    sweep: Annotated[
        str | None,
        typer.Option("--sweep", help="The sweep (experiment) whose URL to print."),
    ] = None,
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            "--tracking-uri",
            help="The sweeps' MLflow store (sqlite:///…, postgresql://…) "
            f"[default: the spec's, else {DEFAULT_TRACKING_URI}].",
            show_default=False,
        ),
    ] = None,
    port: Annotated[int, typer.Option(help="Port to serve the UI on.")] = 5000,
    host: Annotated[
        str, typer.Option(help="Interface to bind; keep 127.0.0.1 (the UI has no login).")
    ] = "127.0.0.1",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the command instead of running it.")
    ] = False,
) -> None:
    """Browse sweep results in the MLflow UI (Ctrl-C stops it).

    Each sweep is an experiment, each optimizer's study a parent run, each trial a child run.
    The printed experiment URLs open on the runs (the UI's "Model training" view).
    """
    if spec_path is not None:
        try:
            spec = load_spec(spec_path)
        except (SpecError, ValueError) as error:
            fail(str(error))
        if spec.tracking_uri is None and tracking_uri is None:
            fail(f"{spec_path} tracks no MLflow runs ([tracking] is off): pass --tracking-uri")
        tracking_uri = tracking_uri or spec.tracking_uri
        sweep = sweep or spec.name
    tracking_uri = tracking_uri or DEFAULT_TRACKING_URI
    shown_uri = redact_url(tracking_uri)
    if tracking_uri.startswith(("http://", "https://")):
        fail(f"{shown_uri} is already an MLflow server with its own UI: open it in a browser")
    db = sqlite_db_path(tracking_uri)
    if db is not None and not db.is_file():
        fail(f"no MLflow database at {db}: run a sweep first, or pass --tracking-uri")
    if not 1 <= port <= 65535:
        fail(f"--port must be in 1..65535, got {port}")
    if not is_loopback(host):
        # Before --dry-run returns: whoever prepares the command should see it too.
        console.print(
            f"[yellow]warning:[/] the MLflow UI has no login: anyone who can reach {host}:{port} "
            "can read and delete every run; keep --host 127.0.0.1 unless the network is trusted",
            highlight=False,
            soft_wrap=True,
        )
    command = ui_command(host, port)
    if dry_run:
        shown = [f"{STORE_VARIABLE}={redact_url(tracking_uri)}", *command]
        console.print(shlex.join(shown), highlight=False, soft_wrap=True)
        return
    if not _port_free(host, port):
        fail(f"port {port} on {host} is in use: pass --port")
    url_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    if ":" in url_host and not url_host.startswith("["):
        url_host = f"[{url_host}]"  # an IPv6 address in a URL
    base_url = f"http://{url_host}:{port}"
    console.print(
        f"MLflow UI for [bold]{shown_uri}[/] at [link]{base_url}[/] "
        "(ready in a few seconds; Ctrl-C stops it)"
    )
    _sweep_links(tracking_uri, sweep, base_url)
    console.print(
        "To compare trials: open the sweep's experiment, expand an optimizer's study run, tick "
        "its child runs and press [bold]Compare[/]; charts plot test_accuracy and train_loss per "
        "epoch (x-axis 'Relative time' = training seconds)."
    )
    env = ui_environment(tracking_uri)
    # MLflow runs in its own process group, so Ctrl-C reaches only us and we stop it with
    # SIGTERM: uvicorn then shuts down quietly instead of printing a KeyboardInterrupt traceback.
    posix = os.name == "posix"
    process = subprocess.Popen(command, env=env, start_new_session=posix)
    previous = {sig: signal.signal(sig, _interrupt) for sig in _STOP_SIGNALS}
    try:
        code = process.wait()
    except KeyboardInterrupt:
        _stop(process, posix)
        console.print("MLflow UI stopped")
        return
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if code != 0:
        console.print(f"[red]mlflow ui exited with status {code}[/]")
        raise typer.Exit(1)
