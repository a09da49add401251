"""What one trial and one study look like in MLflow: params, tags and metrics, cleaned.

Keys are made valid, secret-named values and URL passwords masked, values cut to MLflow's
per-request limits; the names a trial's run carries come from :mod:`looksam.sweeps.schema`.
"""

from __future__ import annotations

import getpass
import json
import math
import re
import statistics
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeVar

from looksam.sweeps.redact import MASK, redact_text
from looksam.sweeps.schema import METRIC, PARAM, TAG
from looksam.sweeps.tracking.protocol import TrialRecord
from looksam.train.runner import EpochRecord, RunResult

# MLflow's per-request limits (mlflow.utils.validation); log_batch refuses more.
_MAX_ENTITIES = 1000
_MAX_METRICS = 1000
_MAX_PARAMS_OR_TAGS = 100
_MAX_PARAM_VALUE = 6000
_MAX_TAG_VALUE = 8000
_MAX_KEY = 250
_SECRET_KEY = re.compile(r"(password|passwd|pwd|secret|token|api_?key)$", re.IGNORECASE)

_ParamT = TypeVar("_ParamT")
_MetricT = TypeVar("_MetricT")


def _clean_params(params: Mapping[str, Any]) -> dict[str, str]:
    """Params as MLflow will store them (valid keys, secrets masked, length capped)."""
    return {_key(k): _param_value(k, v) for k, v in params.items()}


def _batches(
    params: list[_ParamT], metrics: list[_MetricT]
) -> Iterator[tuple[list[_ParamT], list[_MetricT]]]:
    """Split into log_batch-sized chunks: ≤100 params, ≤1000 metrics, ≤1000 entities."""
    while params or metrics:
        chunk_params, params = params[:_MAX_PARAMS_OR_TAGS], params[_MAX_PARAMS_OR_TAGS:]
        room = min(_MAX_METRICS, _MAX_ENTITIES - len(chunk_params))
        chunk_metrics, metrics = metrics[:room], metrics[room:]
        yield chunk_params, chunk_metrics


def _key(name: str) -> str:
    """An MLflow-valid param/metric/tag key (letters, digits, ``_ - . /`` and space)."""
    return re.sub(r"[^\w.\- /]", "_", name).strip("/")[:_MAX_KEY] or "_"


def _param_value(key: str, value: Any) -> str:
    text = MASK if _SECRET_KEY.search(key) else redact_text(str(value))
    return text[:_MAX_PARAM_VALUE]


def _clean_tags(tags: Mapping[str, str]) -> dict[str, str]:
    return {
        _key(k): (MASK if _SECRET_KEY.search(k) else redact_text(v))[:_MAX_TAG_VALUE]
        for k, v in tags.items()
    }


def _redacted(value: Any, key: str = "") -> Any:
    """A copy of a nested spec with every URL password and every secret-named value masked."""
    if isinstance(value, Mapping):
        return {str(k): _redacted(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(v, key) for v in value]
    if _SECRET_KEY.search(key) and value is not None:
        return MASK
    return redact_text(value) if isinstance(value, str) else value


def _flatten(spec: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``{"a": {"b": 1}}`` -> ``("a.b", 1)``; lists become their JSON text."""
    for key, value in spec.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{name}.")
        elif isinstance(value, list | tuple):
            yield name, json.dumps(value, default=str)
        else:
            yield name, value


def _user() -> str:
    """Who ran the sweep (the UI's User column); MLflow's fluent API sets the same tag."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name in some containers
        return "unknown"


def _run_status(record: TrialRecord) -> str:
    if record.state != "FAIL":
        return "FINISHED"
    return "KILLED" if record.failure_reason == "interrupted" else "FAILED"


def _resolved_base(result: RunResult) -> str:
    """The base optimizer a run really used (the registry's default when none was given)."""
    config = result.config
    if config.base is not None:
        return config.base
    from looksam.optim import resolve_base

    try:
        return resolve_base(config.optimizer, None) or "none"
    except ValueError:  # an optimizer this process does not know
        return "unknown"


def _trial_params(record: TrialRecord) -> dict[str, Any]:
    params: dict[str, Any] = {PARAM.optimizer: record.optimizer}
    if record.results:
        first = record.results[0]
        params[PARAM.workload] = first.config.workload
        params[PARAM.base] = _resolved_base(first)
        params[PARAM.seeds] = ",".join(str(r.config.seed) for r in record.results)
    params.update(record.params)  # the suggested values are the truth where names overlap
    return params


def _trial_tags(record: TrialRecord) -> dict[str, str]:
    """A child run's tags; its parent's id is added when the run is written."""
    tags = {
        TAG.user: _user(),
        TAG.role: "trial",
        TAG.study: record.study_name,
        TAG.optimizer: record.optimizer,
        TAG.trial_number: str(record.trial_number),
        TAG.state: record.state,
        TAG.failure_reason: record.failure_reason or "none",
    }
    if record.results:
        env = record.results[0].environment
        tags.update(
            {
                TAG.device: env.device,
                TAG.device_name: env.device_name,
                TAG.torch_version: env.torch_version,
                TAG.timm_version: env.timm_version or "none",
                TAG.git_commit: env.git_commit or "unknown",
                TAG.seed_status: ",".join(r.status for r in record.results),
            }
        )
        messages = "; ".join(r.message for r in record.results if r.message)
        if messages:
            tags[TAG.message] = messages
    tags.update(record.tags)
    return tags


def _mean(values: Sequence[float | None]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.fmean(finite) if finite else None


def _trial_metrics(record: TrialRecord) -> list[tuple[str, float, int, int]]:
    """(key, value, step, ms of training) rows: per-epoch curves (mean and per seed), then finals.

    Curves are the mean over the seeds that reached that epoch (a diverged seed stops early);
    ``best_accuracy`` is the best point of the mean curve, so it is a value the curve shows.
    """
    rows: list[tuple[str, float, int, int]] = []
    results = record.results
    by_epoch: dict[int, list[EpochRecord]] = {}
    for result in results:
        for h in result.history:
            by_epoch.setdefault(h.epoch, []).append(h)
    best: float | None = None
    for epoch, at in sorted(by_epoch.items()):
        stamp = round(1000 * (_mean([h.train_seconds for h in at]) or 0.0))
        for key, value in (
            (METRIC.test_accuracy, _mean([h.test_accuracy for h in at])),
            (METRIC.train_loss, _mean([h.train_loss for h in at])),
        ):
            if value is not None:
                rows.append((key, value, epoch, stamp))
        accuracy = _mean([h.test_accuracy for h in at])
        if accuracy is not None and (best is None or accuracy > best):
            best = accuracy
    for result in results if len(results) > 1 else ():  # one seed: its curve is the mean
        for h in result.history:
            if h.test_accuracy is not None:
                stamp = round(1000 * h.train_seconds)
                key = METRIC.seed_test_accuracy(result.config.seed)
                rows.append((key, h.test_accuracy, h.epoch, stamp))
    if best is None:
        best = _mean([r.best_accuracy for r in results])
    reached = [r.time_to_target_seconds for r in results if r.time_to_target_seconds is not None]
    finals = {
        METRIC.final_accuracy: _mean([r.final_accuracy for r in results]),
        METRIC.best_accuracy: best,
        METRIC.train_seconds: _mean([r.train_seconds for r in results]),
        METRIC.samples_per_second: _mean([r.samples_per_second for r in results]),
        METRIC.forward_backward_passes: _mean([float(r.forward_backward_passes) for r in results]),
        METRIC.passes_per_step: _mean([r.passes_per_step for r in results]),
        METRIC.second_pass_fraction: _mean([r.second_pass_fraction for r in results]),
        METRIC.time_to_target_seconds: _mean(list(reached)),
        METRIC.seeds_reached_target: float(len(reached)) if results else None,
    }
    for i, value in enumerate(record.objective_values or ()):
        finals[METRIC.objective(i)] = value if math.isfinite(value) else None
    finals.update({k: v if math.isfinite(v) else None for k, v in record.metrics.items()})
    end = max((stamp for *_, stamp in rows), default=0)
    rows.extend((key, v, 0, end) for key, v in finals.items() if v is not None)
    return rows
