"""`looksam-bench diagnose`: does g_v drift slower than g and g_s on this workload?"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from looksam.cli import _options as opt
from looksam.cli._console import (
    ProgressLog,
    check_writable,
    console,
    fail,
    in_a_log,
    training_progress,
)
from looksam.diagnose.experiment import (
    DEFAULT_KS,
    DEFAULT_RHO,
    DEFAULT_STEPS,
    DiagnoseConfig,
    DiagnosisResult,
    run_diagnosis,
    validate_diagnose_config,
    verdict_sentence,
)
from looksam.diagnose.page import render_diagnosis_html
from looksam.train.workloads import WorkloadDataError

#: Where the page goes when --html is not given (git-ignored generated output).
DEFAULT_HTML_DIR = Path("reports")


def _num(value: float) -> str:
    return "-" if value != value else f"{value:.3f}"  # NaN: no pair of steps had a defined value


def build_diagnosis_table(result: DiagnosisResult) -> Table:
    """Per k: median relative drift of g, g_s, g_v and g_v's ratios to the other two."""
    table = Table(
        title=f"Gradient drift on {result.config.workload} (SAM, ρ={result.config.rho:g}, "
        f"{result.steps} steps)",
        title_justify="left",
        caption="median over the run of ‖x_t − x_{t+k}‖ / ‖x_t‖; ratio < 1: g_v drifts less",
        caption_justify="left",
    )
    for column in ("k", "g", "g_s", "g_v", "g_v / g", "g_v / g_s"):
        table.add_column(column, justify="right")
    for s in result.summaries:
        rel = s.median["relative"]
        style = "green" if s.gv_slower else "red"
        table.add_row(
            str(s.k),
            _num(rel["g"]),
            _num(rel["g_s"]),
            _num(rel["g_v"]),
            f"[{style}]{_num(s.gv_over_g)}[/]",
            f"[{style}]{_num(s.gv_over_gs)}[/]",
        )
    return table


def diagnose(
    workload: opt.Workload = "digits-noisy",
    ks: Annotated[
        list[int] | None,
        typer.Option(
            "--k",
            "-k",
            help="Lag in steps between the two gradients compared; repeat for several "
            f"\\[default: {', '.join(map(str, DEFAULT_KS))}].",
        ),
    ] = None,
    rho: Annotated[
        float, typer.Option(help="SAM's perturbation radius ρ > 0 (the `run -o sam` default).")
    ] = DEFAULT_RHO,
    steps: Annotated[
        int, typer.Option(help="Training steps to measure over (at least max(k) + 1).")
    ] = DEFAULT_STEPS,
    seed: opt.Seed = 0,
    lr: opt.Lr = None,
    batch_size: opt.BatchSize = None,
    device: opt.Device = "auto",
    html_path: Annotated[
        Path | None,
        typer.Option(
            "--html", help="Write the page here \\[default: reports/diagnose-WORKLOAD.html]."
        ),
    ] = None,
    json_path: opt.JsonOut = None,
    data_dir: opt.DataDir = None,
) -> None:
    """Measure LookSAM's premise (its paper's Figure 2) on a workload: does g_v drift slowly?

    Trains with SAM, which computes at every step [bold]g[/] = ∇L(w) and [bold]g_s[/] =
    ∇L(w + ρg/‖g‖). LookSAM splits g_s into its part along g and the rest, [bold]g_v[/], and
    reuses g_v for k steps, which is sound only if g_v changes slowly. For each lag k and each
    vector x the command records ‖x_t − x_{t+k}‖ (absolute drift), that divided by ‖x_t‖
    (relative drift) and cos(x_t, x_{t+k}), with norms over all parameters.

    The table shows the median relative drift over the run: 0 means unchanged, about 1.41 (√2)
    means as different as two unrelated directions of the same size. A ratio g_v / g below 1
    means g_v drifted less than g. Relative drift is the fair comparison because g_v is smaller
    than g and g_s; the absolute numbers, cosines and per-step curves are in the HTML and JSON.
    The closing sentence says whether g_v's ratios are below 1 at every k, as the paper claims.

    Training follows `run -o sam`: SGD with momentum, the workload's learning rate, warm-up then
    cosine decay over --steps. The page goes to reports/diagnose-WORKLOAD.html unless --html
    names another file.

      looksam-bench diagnose -w digits-noisy --k 1 --k 5 --steps 400
    """
    try:
        config = DiagnoseConfig(
            workload=workload,
            ks=tuple(ks) if ks else DEFAULT_KS,
            rho=rho,
            steps=steps,
            seed=seed,
            device=device,
            lr=lr,
            batch_size=batch_size,
            data_dir=str(data_dir) if data_dir is not None else None,
        )
        validate_diagnose_config(config)
    except (ValueError, WorkloadDataError) as error:
        fail(str(error))
    make_html_dir = False
    if html_path is None:
        html_path = DEFAULT_HTML_DIR / f"diagnose-{workload}.html"
        make_html_dir = not html_path.parent.exists()
    # The default folder is created only after training; until then its parent must be writable.
    check_writable(html_path.parent if make_html_dir else html_path, "--html")
    check_writable(json_path, "--json")
    what = f"SAM on {workload}"
    log = None
    if in_a_log():  # plain lines on stderr: the live bar is not drawn in a log
        log = ProgressLog(f"diagnose: {what}", config.steps, "steps")
    with training_progress() as progress:
        task = progress.add_task(what, total=config.steps, status="")

        def report(step: int, total: int, loss: float) -> None:
            progress.update(task, completed=step, total=total, status=f"loss {loss:.3f}")
            if log is not None:
                log(step, total)

        try:
            result = run_diagnosis(config, progress=report)
        except (ValueError, WorkloadDataError) as error:  # found only once data is loaded
            fail(str(error))
    console.print(build_diagnosis_table(result))
    accuracy = (
        "" if result.test_accuracy is None else f", test accuracy {result.test_accuracy:.3f}"
    )
    status = "" if result.status == "ok" else f" [red]{result.status}: {result.message}[/]"
    console.print(f"{result.steps} steps in {result.seconds:.1f} s{accuracy}{status}")
    console.print(verdict_sentence(result), style="bold", highlight=False)
    if make_html_dir:
        html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(render_diagnosis_html(result), encoding="utf-8")
    console.print(f"wrote {html_path}")
    if json_path is not None:
        result.write_json(json_path)
        console.print(f"wrote {json_path}")
    if result.status != "ok":
        raise typer.Exit(1)


def _unwrap(doc: str | None) -> str:
    """Join the source's line breaks inside paragraphs: Typer's rich help would keep them and
    wrap each source line again; indented lines (examples) stay as they are."""
    paragraphs = inspect.cleandoc(doc or "").split("\n\n")
    return "\n\n".join(p if p.startswith(" ") else p.replace("\n", " ") for p in paragraphs)


diagnose.__doc__ = _unwrap(diagnose.__doc__)
