"""The drift diagnosis: g_v's maths by hand, bounded memory, validation, JSON, short real runs."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from looksam.diagnose import experiment as diagnose
from looksam.diagnose.experiment import (
    DEFAULT_KS,
    DEFAULT_RHO,
    METRICS,
    VECTORS,
    DiagnoseConfig,
    DiagnosisResult,
    DriftSeries,
    RingBuffer,
    drift,
    orthogonal_component,
    run_diagnosis,
    summarise,
    validate_diagnose_config,
    verdict_sentence,
)
from looksam.optim import LookSAM


def t(*values: float) -> Tensor:
    return torch.tensor(values, dtype=torch.float64)


# --------------------------------------------------------------------------- maths by hand


def test_g_v_is_orthogonal_to_g_and_completes_g_s() -> None:
    gen = torch.Generator().manual_seed(0)
    g = torch.randn(50, generator=gen, dtype=torch.float64)
    g_s = torch.randn(50, generator=gen, dtype=torch.float64)
    g_v = orthogonal_component(g, g_s)
    assert float(torch.dot(g, g_v)) == pytest.approx(0.0, abs=1e-12)
    beta = float(torch.dot(g, g_s) / torch.dot(g, g))
    torch.testing.assert_close(g_v + beta * g, g_s)


def test_g_v_by_hand() -> None:
    # <g, g_s> = 20, |g|^2 = 25: g_v = (0, 5) - 0.8 * (3, 4) = (-2.4, 1.8)
    torch.testing.assert_close(orthogonal_component(t(3, 4), t(0, 5)), t(-2.4, 1.8))
    torch.testing.assert_close(orthogonal_component(t(1, 0), t(1, 1)), t(0, 1))
    torch.testing.assert_close(orthogonal_component(t(1, 1), t(2, 2)), t(0, 0))  # g_s ∥ g


def test_zero_gradient_leaves_g_s_whole() -> None:
    g_s = t(1.0, -2.0, 3.0)
    g_v = orthogonal_component(torch.zeros(3, dtype=torch.float64), g_s)
    torch.testing.assert_close(g_v, g_s)
    assert g_v.data_ptr() != g_s.data_ptr()  # a copy: the ring buffer may outlive g_s


def test_drift_by_hand() -> None:
    d = drift(t(3, 4), t(0, 5))  # difference (3, -1): sqrt(10); |x_t| = 5; cos = 20 / 25
    assert d.absolute == pytest.approx(math.sqrt(10))
    assert d.relative == pytest.approx(math.sqrt(10) / 5)
    assert d.cosine == pytest.approx(0.8)
    same = drift(t(1, 2), t(1, 2))
    assert (same.absolute, same.relative, same.cosine) == (0.0, 0.0, pytest.approx(1.0))
    opposite = drift(t(1, 0), t(-2, 0))
    assert (opposite.absolute, opposite.relative, opposite.cosine) == (3.0, 3.0, -1.0)


def test_drift_from_or_to_zero_is_undefined_where_it_must_be() -> None:
    from_zero = drift(t(0, 0), t(3, 4))
    assert from_zero.absolute == 5.0
    assert math.isnan(from_zero.relative)  # no size to compare against
    assert math.isnan(from_zero.cosine)  # no direction
    to_zero = drift(t(3, 4), t(0, 0))
    assert (to_zero.absolute, to_zero.relative) == (5.0, 1.0)
    assert math.isnan(to_zero.cosine)


def test_g_v_matches_the_looksam_optimizer() -> None:
    """The diagnosis's g_v is the vector LookSAM itself stores on a look step."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    x, y = torch.randn(16, 5, dtype=torch.float64), torch.randn(16, 3, dtype=torch.float64)
    opt = LookSAM(torch.optim.SGD(model.parameters(), lr=0.1), rho=0.5, k=1)
    grads: list[Tensor] = []

    def closure() -> Tensor:
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
        return loss

    opt.step(closure)
    stored = torch.cat([opt.state[p]["g_v"].reshape(-1) for p in model.parameters()])
    torch.testing.assert_close(orthogonal_component(*grads), stored)


# --------------------------------------------------------------------------- bounded memory


def test_ring_buffer_keeps_only_the_last_capacity_items() -> None:
    ring: RingBuffer[int] = RingBuffer(3)
    for i in range(10):
        ring.push(i)
        assert len(ring) == min(i + 1, 3)
    assert ring.capacity == 3
    assert [ring.ago(lag) for lag in range(3)] == [9, 8, 7]
    with pytest.raises(IndexError, match="lag 3"):
        ring.ago(3)
    with pytest.raises(ValueError, match="capacity"):
        RingBuffer(0)


def test_a_run_never_holds_more_than_max_k_plus_one_gradients(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rings: list[RingBuffer[object]] = []
    most = [0]

    class Watched(RingBuffer[object]):
        def __init__(self, capacity: int) -> None:
            super().__init__(capacity)
            rings.append(self)

        def push(self, item: object) -> None:
            super().push(item)
            most[0] = max(most[0], len(self))

    monkeypatch.setattr(diagnose, "RingBuffer", Watched)
    config = DiagnoseConfig("digits-noisy", ks=(1, 3), steps=10, device="cpu")
    assert run_diagnosis(config).status == "ok"
    assert len(rings) == len(VECTORS)
    assert {r.capacity for r in rings} == {4}
    assert most[0] == 4


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"ks": ()}, "at least one k"),
        ({"ks": (0,)}, "k=0"),
        ({"ks": (1, -2)}, "k=-2"),
        ({"ks": (1.5,)}, "k=1.5"),
        ({"ks": (True,)}, "k=True"),
        ({"ks": (2, 5, 2)}, "k=2 more than once"),
        ({"ks": (1, 10), "steps": 10}, "steps=10"),
        ({"steps": 2.5}, "steps must be an integer"),
        ({"rho": 0.0}, "rho=0.0"),
        ({"rho": -0.1}, "rho=-0.1"),
        ({"rho": math.nan}, "rho=nan"),
        ({"lr": 0.0}, "lr=0.0"),
        ({"batch_size": 0}, "batch_size=0"),
    ],
)
def test_bad_config_raises_naming_the_value(fields: dict[str, object], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        DiagnoseConfig("digits-noisy", **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "needle"),
    [({"workload": "nope"}, "unknown workload 'nope'"), ({"device": "tpu"}, "unknown device")],
)
def test_bad_workload_or_device_is_caught_before_training(
    fields: dict[str, str], needle: str
) -> None:
    config = DiagnoseConfig(**{"workload": "digits-noisy", **fields})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=needle):
        validate_diagnose_config(config)


def test_defaults_and_normalised_k_values() -> None:
    config = DiagnoseConfig("digits-noisy", ks=[10, 1, 5])  # type: ignore[arg-type]
    assert config.ks == (1, 5, 10)
    assert DiagnoseConfig("digits-noisy").ks == DEFAULT_KS == (1, 2, 5, 10)
    assert DEFAULT_RHO == 0.05  # SAM's registry default, what `run -o sam` uses
    run = config.run_config()
    assert (run.optimizer, run.hyperparameters, run.max_steps) == ("sam", {"rho": 0.05}, 400)


# --------------------------------------------------------------------------- summaries


def series_of(k: int, relative: dict[str, list[float]]) -> list[DriftSeries]:
    """Hand-made series: the given relative drift, absolute = 10 × that, cosine 0.5."""
    out = []
    for v in VECTORS:
        rel = relative[v]
        by_metric = {
            "relative": rel,
            "absolute": [10 * x for x in rel],
            "cosine": [0.5] * len(rel),
        }
        steps = tuple(range(k, k + len(rel)))
        out.extend(DriftSeries(k, v, m, steps, tuple(by_metric[m])) for m in METRICS)
    return out


def test_summary_medians_and_ratios_by_hand() -> None:
    series = series_of(1, {"g": [1.0, 2.0, 3.0], "g_s": [2.0, 4.0, 9.0], "g_v": [0.5, 1.0, 7.0]})
    (s,) = summarise(series, [1])
    assert s.median["relative"] == {"g": 2.0, "g_s": 4.0, "g_v": 1.0}
    assert s.median["absolute"]["g_v"] == 10.0
    assert s.median["cosine"]["g"] == 0.5
    assert (s.gv_over_g, s.gv_over_gs) == (0.5, 0.25)
    assert (s.abs_gv_over_g, s.abs_gv_over_gs) == (0.5, 0.25)
    assert s.gv_slower


def test_medians_skip_undefined_points() -> None:
    series = series_of(2, {"g": [math.nan, 1.0, 3.0], "g_s": [2.0] * 3, "g_v": [math.nan] * 3})
    (s,) = summarise(series, [2])
    assert s.median["relative"]["g"] == 2.0
    assert math.isnan(s.median["relative"]["g_v"])
    assert math.isnan(s.gv_over_g)
    assert not s.gv_slower


@pytest.fixture(scope="module")
def short_run() -> DiagnosisResult:
    """One real diagnosis, shared: 12 SAM steps on digits-noisy at k = 1 and 3."""
    return run_diagnosis(DiagnoseConfig("digits-noisy", ks=(1, 3), steps=12, device="cpu"))


def with_relative(result: DiagnosisResult, ratios: dict[int, float]) -> DiagnosisResult:
    """The result with hand-made series whose g_v/g and g_v/g_s ratios are ``ratios[k]``."""
    series = [
        s for k, r in ratios.items() for s in series_of(k, {"g": [1.0], "g_s": [1.0], "g_v": [r]})
    ]
    return dataclasses.replace(
        result,
        config=dataclasses.replace(result.config, ks=tuple(ratios)),
        series=tuple(series),
        summaries=summarise(series, list(ratios)),
    )


def test_verdict_and_its_sentence(short_run: DiagnosisResult) -> None:
    clear = with_relative(short_run, {1: 0.3, 3: 0.5})
    assert clear.verdict
    assert clear.clearly_slower
    assert "clearly slower than both g and g_s at every k" in verdict_sentence(clear)
    slight = with_relative(short_run, {1: 0.3, 3: 0.97})
    assert slight.verdict
    assert not slight.clearly_slower
    assert "only slightly" in verdict_sentence(slight)
    fails = with_relative(short_run, {1: 0.5, 3: 1.2})
    assert not fails.verdict
    assert "fails at k = 3" in verdict_sentence(fails)


# --------------------------------------------------------------------------- real runs


def test_short_run_measures_every_lag(short_run: DiagnosisResult) -> None:
    r = short_run
    assert (r.status, r.steps) == ("ok", 12)
    assert len(r.series) == 2 * len(VECTORS) * len(METRICS)
    for s in r.series:
        assert len(s.values) == 12 - s.k
        assert s.steps == tuple(range(s.k, 12))
        assert all(math.isfinite(v) for v in s.values), (s.k, s.vector, s.metric)
        if s.metric == "cosine":
            assert all(-1.0 <= v <= 1.0 for v in s.values)
        else:
            assert all(v > 0.0 for v in s.values)
    for summary in r.summaries:
        for metric in METRICS:
            assert all(math.isfinite(v) for v in summary.median[metric].values())
        assert math.isfinite(summary.gv_over_g)
        assert math.isfinite(summary.gv_over_gs)
        # g_v is a component of g_s: it is smaller, so its absolute drift is too
        assert summary.abs_gv_over_gs < 1.0
    assert len(r.train_loss) == 12
    assert all(math.isfinite(x) for x in r.train_loss)
    assert r.test_accuracy is not None
    assert 0.0 <= r.test_accuracy <= 1.0
    assert (r.lr, r.batch_size) == (0.05, 64)
    assert r.environment.device == "cpu"
    assert isinstance(verdict_sentence(r), str)


def test_json_round_trip(short_run: DiagnosisResult, tmp_path: Path) -> None:
    path = tmp_path / "diagnosis.json"
    short_run.write_json(path)
    data = json.loads(path.read_text())
    assert data["verdict"] == short_run.verdict
    assert data["config"]["ks"] == [1, 3]
    assert DiagnosisResult.from_dict(data) == short_run


def test_undefined_values_are_null_in_json_and_nan_again_after(
    short_run: DiagnosisResult,
) -> None:
    first = short_run.series[0]
    holed = dataclasses.replace(first, values=(math.nan, *first.values[1:]))
    result = dataclasses.replace(short_run, series=(holed, *short_run.series[1:]))
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["series"][0]["values"][0] is None
    back = DiagnosisResult.from_dict(data)
    assert math.isnan(back.series[0].values[0])
    assert back.series[0].values[1:] == first.values[1:]


def test_speed_only_workload_has_no_accuracy_but_measures_drift() -> None:
    r = run_diagnosis(DiagnoseConfig("synthetic-mlp", ks=(1, 2), steps=6, device="cpu"))
    assert r.status == "ok"
    assert r.test_accuracy is None
    assert all(math.isfinite(s.gv_over_g) for s in r.summaries)


def test_divergence_stops_the_run_and_keeps_what_was_measured() -> None:
    progress: list[int] = []
    config = DiagnoseConfig("digits-noisy", ks=(1, 2), steps=30, lr=1e12, device="cpu")
    r = run_diagnosis(config, progress=lambda step, total, loss: progress.append(step))
    assert r.status == "diverged"
    assert "non-finite" in r.message
    assert r.steps < 30
    assert progress == list(range(1, r.steps + 1))
    assert r.test_accuracy is None
    assert not r.verdict
    assert verdict_sentence(r).startswith(f"Training diverged after {r.steps} steps")
    json.dumps(r.to_dict(), allow_nan=False)  # still strict JSON
