"""Read a sweep back from its Optuna storage into the reports' plain data model."""

from __future__ import annotations

import dataclasses
import datetime as dt
import platform
import statistics
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from looksam._json import write_json
from looksam.optim import get_optimizer_info
from looksam.reports.model import StudyData, SweepData, TrialPoint
from looksam.reports.summary import accuracy_reference
from looksam.sweeps._storage import open_storage
from looksam.sweeps.redact import redact_url
from looksam.sweeps.schema import STUDY, TrialAttrs, check_version, read_trial_attrs
from looksam.sweeps.spec import Dimension, SpecError, SweepSpec
from looksam.train.runner import git_commit_of_project
from looksam.train.workloads import get_workload_info


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


#: Report fields that are the mean over seeds of a stored per-seed field.
_SEED_MEANS = {
    "accuracy": "seed_accuracies",
    "train_seconds": "seed_train_seconds",
    "samples_per_second": "seed_samples_per_second",
    "samples": "seed_samples",
}
#: Report fields stored under the same name, read as they are.
_AS_STORED = tuple(
    f.name
    for f in dataclasses.fields(TrialPoint)
    if f.name in {g.name for g in dataclasses.fields(TrialAttrs)}
)


def point_from_attrs(
    optimizer: str,
    number: int,
    state: str,
    params: dict[str, Any],
    stored: TrialAttrs,
    values: tuple[float, ...] | None = None,
) -> TrialPoint:
    """A trial's stored attributes as a report point (the one place they become one)."""
    reached = stored.seed_time_to_target
    # Time-to-target only when every seed reached the target (AlgoPerf: else it failed it).
    ttt = _mean([t for t in reached if t is not None]) if reached and None not in reached else None
    fields: dict[str, Any] = {name: getattr(stored, name) for name in _AS_STORED}
    for name, per_seed in _SEED_MEANS.items():
        fields[name] = _mean(list(getattr(stored, per_seed)))
    fields.update(time_to_target_seconds=ttt, curve=stored.curve_accuracy, values=values)
    searched = stored.source_params if stored.source_params is not None else params
    fields["searched_params"] = dict(searched)
    return TrialPoint(optimizer, number, state, {**stored.hyperparameters, **params}, **fields)


def point_from_trial(optimizer: str, trial: FrozenTrial) -> TrialPoint:
    """A stored trial as a report point."""
    values = tuple(trial.values) if trial.values is not None else None
    stored = read_trial_attrs(trial.user_attrs)
    return point_from_attrs(
        optimizer, trial.number, trial.state.name, dict(trial.params), stored, values
    )


def reference_k(optimizer: str, space: Mapping[str, Dimension]) -> dict[str, Any]:
    """The registry's default k of ``optimizer`` (none: {}), clamped into the searched range:
    the k at which a study's expected passes per step are stated."""
    info = get_optimizer_info(optimizer)
    default = next((hp.default for hp in info.hyperparameters if hp.name == "k"), None)
    if default is None:
        return {}
    k = int(default)
    searched = space.get("k")
    if searched is not None and searched.low is not None:
        k = max(k, int(searched.low))
        if searched.high is not None:
            k = min(k, int(searched.high))
    return {"k": k}


def _importances(study: optuna.Study, multi: bool) -> dict[str, float]:
    """fANOVA importances of the study's objective (accuracy, for a pareto study), seeded.

    Named explicitly: Optuna's default evaluator changed (fANOVA in 4.x, PED-ANOVA in 5.x),
    and the report describes a share of the objective's variance, which is fANOVA's measure.
    """
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    varied = {
        k for t in complete for k in t.params if len({u.params.get(k) for u in complete}) > 1
    }
    if len(complete) < 3 or not varied:
        return {}
    target = (lambda t: t.values[0]) if multi else None  # accuracy, for pareto studies
    # Imported here: optuna.importance pulls in scikit-learn, a second of every CLI start.
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental-feature warnings
        try:
            found = get_param_importances(
                study, evaluator=FanovaImportanceEvaluator(seed=0), target=target
            )
        except (ValueError, RuntimeError):
            return {}
    return {k: float(v) for k, v in found.items()}


def load_sweep_data(spec: SweepSpec) -> SweepData:
    """Every study of the sweep, as stored now; SpecError if the sweep has no study at all."""
    storage = open_storage(spec.storage, create=False)
    known = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    studies = []
    settings: dict[str, Any] | None = None  # an advise run's
    for optimizer in spec.optimizers:
        name = spec.study_name(optimizer)
        if name not in known:
            continue
        study = optuna.load_study(study_name=name, storage=storage)
        check_version(study.user_attrs, f"study {name}")
        settings = settings or study.user_attrs.get(STUDY.advice)  # an `advise` run's settings
        space = {d.name: d for d in spec.space_for(optimizer)}
        confirm_name = f"{name}/confirm"
        confirmations: tuple[TrialPoint, ...] = ()
        if confirm_name in known:
            confirm = optuna.load_study(study_name=confirm_name, storage=storage)
            check_version(confirm.user_attrs, f"study {confirm_name}")
            confirmations = tuple(
                point_from_trial(optimizer, t) for t in confirm.get_trials(deepcopy=False)
            )
        studies.append(
            StudyData(
                optimizer=optimizer,
                study_name=name,
                passes_per_step=get_optimizer_info(optimizer).passes_per_step(
                    reference_k(optimizer, space)
                ),
                trials=tuple(
                    point_from_trial(optimizer, t) for t in study.get_trials(deepcopy=False)
                ),
                importances=_importances(study, multi=spec.objective == "pareto"),
                confirmations=confirmations,
            )
        )
    if not studies:
        raise SpecError(
            f"no study of sweep {spec.name!r} in {redact_url(spec.storage)}: run it first"
        )
    info = get_workload_info(spec.workload.name)
    spec_dict: dict[str, Any] = spec.to_dict()
    spec_dict["storage"] = redact_url(spec.storage)
    spec_dict["tracking_uri"] = redact_url(spec.tracking_uri) if spec.tracking_uri else None
    return SweepData(
        name=spec.name,
        workload=spec.workload.name,
        objective=spec.objective,
        base=spec.base,
        target_accuracy=info.target_accuracy,
        studies=tuple(studies),
        spec=spec_dict,
        environment={
            "python": platform.python_version(),
            "torch": torch.__version__,
            "optuna": optuna.__version__,
            "platform": platform.platform(),
            "git_commit": git_commit_of_project(),
            "device": spec.workload.device,
        },
        generated_at=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        reference=spec.base,
        reference_batch_size=(
            spec.reference_batch_size or spec.workload.batch_size or info.default_batch_size
        ),
        confirm_seeds=spec.confirm_seeds,
        confirm_pick=spec.confirm_pick,
        confirm_margin=spec.confirm_margin,
        accuracy_reference=accuracy_reference(spec.optimizers, spec.accuracy_reference),
        advise_settings=settings,
    )


def discover_spec(sweep: str, storage: str) -> SweepSpec:
    """A minimal spec for a stored sweep found by name (``report --sweep NAME``)."""
    from looksam.sweeps.spec import parse_spec

    summaries = optuna.get_all_study_summaries(open_storage(storage, create=False))
    mine = [
        s
        for s in summaries
        if s.study_name.startswith(f"{sweep}/") and not s.study_name.endswith("/confirm")
    ]
    if not mine:
        names = sorted({s.study_name.split("/")[0] for s in summaries})
        known = f"; sweeps there: {', '.join(names)}" if names else ""
        raise SpecError(f"no sweep named {sweep!r} in {redact_url(storage)}{known}")
    for summary in mine:  # before reading anything a newer version may mean differently
        check_version(summary.user_attrs, f"study {summary.study_name}")
    workload = mine[0].study_name.split("/")[1]
    optimizers = [s.study_name.split("/")[-1] for s in mine]
    objective = "pareto" if len(mine[0].directions) == 2 else "accuracy"
    plugins = sorted({p for s in mine for p in s.user_attrs.get(STUDY.plugins, [])})
    stored = mine[0].user_attrs.get(STUDY.confirm) or {}
    spec = parse_spec(
        {
            "plugins": plugins,  # the sweep's own optimizers, registered before they are named
            "sweep": {"name": sweep},
            "workload": {"name": workload},
            "optimizers": {"names": optimizers},
            "objective": objective,
            "storage": storage,
        },
        f"stored sweep {sweep}",
        {"no_mlflow": True},
    )
    if not stored:  # a sweep stored before its confirmation settings were
        return spec
    return dataclasses.replace(
        spec,
        confirm_pick=str(stored.get("pick", spec.confirm_pick)),
        confirm_margin=float(stored.get("margin", spec.confirm_margin)),
        accuracy_reference=stored.get("reference"),
        confirm_seeds=tuple(int(s) for s in stored.get("seeds") or ()),
        base=str(stored.get("base", spec.base)),
    )


def save_report(
    data: SweepData,
    *,
    html: Path | None = None,
    markdown: Path | None = None,
    json_path: Path | None = None,
    margin: float | None = None,
) -> list[Path]:
    """Render and write the requested report files; returns the paths written.

    ``margin`` is δ of the "matches within δ" findings (None: the findings module's default).
    """
    from looksam.reports.advice import advice_from, advice_json
    from looksam.reports.findings import EQUIVALENCE_MARGIN, findings
    from looksam.reports.html import render_html
    from looksam.reports.leaderboard import contended_total, leaderboard_json, leaderboard_rows
    from looksam.reports.markdown import render_markdown

    sentences = findings(data, EQUIVALENCE_MARGIN if margin is None else margin)
    written = []
    if html is not None:
        html.parent.mkdir(parents=True, exist_ok=True)
        page = render_html(data, leaderboard_rows=leaderboard_rows(data), findings=sentences)
        html.write_text(page)
        written.append(html)
    if markdown is not None:
        markdown.write_text(render_markdown(data, sentences))
        written.append(markdown)
    if json_path is not None:
        advice = advice_from(data)
        payload = {
            "advice": None if advice is None else advice_json(advice),
            "leaderboard": leaderboard_json(data),
            "findings": [f.to_dict() for f in sentences],
            "contended_trials": contended_total(data),
            **dataclasses.asdict(data),
        }
        write_json(payload, json_path)
        written.append(json_path)
    return written
