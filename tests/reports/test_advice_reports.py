"""A stored advise run read back: the screen, the arms and their costs, and the answer in every
output (terminal, Markdown, HTML with the confirmed points ringed, JSON)."""

from __future__ import annotations

import io
import json
import re
from dataclasses import replace

from rich.console import Console

from looksam.reports.advice import advice_from, arms_from, screen
from looksam.reports.findings import findings
from looksam.reports.html import render_html
from looksam.reports.markdown import render_markdown
from looksam.reports.model import StudyData, SweepData, TrialPoint
from looksam.reports.terminal import terminal_report


def _trial(opt: str, n: int, accuracy: float, cost: float, **params: object) -> TrialPoint:
    return TrialPoint(
        optimizer=opt,
        number=n,
        state="COMPLETE",
        params=dict(params),
        accuracy=accuracy,
        seed_accuracies=(accuracy,),
        train_seconds=cost,
        samples_per_second=100.0,
        time_to_target_seconds=None,
        curve=(0.5, accuracy),
        paired_ratios=(cost,) * 3,
        paired_costs=(cost,) * 3,
        cost=cost,
        seeds=(0,),
        reference_seconds_per_sample=0.001,  # SGD's, timed in the trial's own rounds
    )


def _runs(source: TrialPoint, accuracies: list[float]) -> list[TrialPoint]:
    """Confirmation runs of ``source``: its settings on fresh seeds, at its cost."""
    return [
        replace(
            _trial(source.optimizer, i, a, source.cost or 0.0, **source.params),
            stage="confirm",
            source_trial=source.number,
            seeds=(i + 1,),
        )
        for i, a in enumerate(accuracies)
    ]


def _study(opt: str, trials: list[TrialPoint], runs: list[TrialPoint]) -> StudyData:
    return StudyData(
        optimizer=opt,
        study_name=f"advise-x/digits-noisy/{opt}",
        passes_per_step=1.0,
        trials=tuple(trials),
        confirmations=tuple(runs),
    )


SETTINGS = {
    "schema_version": 1,
    "reference": "sam",
    "base": "sgd",
    "margin": 0.01,
    "looks": [3, 6, 10],
    "alpha": 0.05,
    "costs": {"msam": {"ratio": 1.3, "q1": 1.2, "q3": 1.4}},
}


def _data() -> SweepData:
    sgd = _trial("sgd", 0, 0.90, 1.0, lr=0.05)
    sam = _trial("sam", 0, 0.96, 2.0, lr=0.05, rho=0.1)
    # the cheapest within a point of SAM's 0.96 is #1, not the more accurate #0
    looksam = [_trial("looksam", 0, 0.97, 1.5, k=2), _trial("looksam", 1, 0.955, 1.2, k=5)]
    # 5 points behind, and timed while the machine was busy: no paired cost of its own
    msam = replace(_trial("msam", 0, 0.91, 1.0, rho=3.0), contended=True)
    studies = (
        _study("sgd", [sgd], _runs(sgd, [0.90] * 3)),
        _study("sam", [sam], _runs(sam, [0.96] * 3)),
        _study("looksam", looksam, _runs(looksam[1], [0.955] * 3)),
        _study("msam", [msam], []),
    )
    return SweepData(
        name="advise-x", workload="digits-noisy", objective="pareto", base="sgd",
        target_accuracy=None, studies=studies, spec={}, environment={}, generated_at="now",
        reference_batch_size=64, advise_settings=SETTINGS,
    )  # fmt: skip


def test_the_screen_keeps_reference_and_base_and_drops_the_hopeless() -> None:
    bests = {"sam": 0.96, "sgd": 0.50, "looksam": 0.931, "samk": 0.929, "msam": None}
    left_out = screen(bests, reference="sam", base="sgd", margin=0.01)
    assert set(left_out) == {"samk", "msam"}  # 3.1 points behind; no finished trial
    assert "trails sam's 96.00 % by 3.10 points" in left_out["samk"]
    assert screen({"sam": 0.96, "x": 0.93}, reference="sam", base="sgd", margin=0.01) == {}


def test_a_stored_run_reads_back_as_arms_and_an_answer() -> None:
    data = _data()
    arms = {a.optimizer: a for a in arms_from(data)}
    assert arms["looksam"].accuracies == (0.955,) * 3
    assert arms["looksam"].cost == 1.2
    assert arms["msam"].cost == 1.3  # no confirmation: the cost bench's figure
    assert arms["msam"].cost_source == "bench"
    advice = advice_from(data)
    assert advice is not None
    assert advice.verdict == "variant"
    assert advice.recommended == "looksam"
    assert advice.family_size == 2  # sgd and looksam: msam was screened out
    assert dict(advice.screened).keys() == {"msam"}
    plain = replace(data, advise_settings=None)
    assert advice_from(plain) is None


def test_every_output_carries_the_answer() -> None:
    data = _data()
    console = Console(file=io.StringIO(), width=100, color_system=None)
    console.print(terminal_report(data, findings(data)))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "Answer (variant): Use LookSAM (k=5): it is within 1 point of SAM's accuracy" in text
    assert 'create_optimizer("looksam", model, base="sgd", k=5)' in text
    markdown = render_markdown(data, findings(data))
    assert markdown.startswith("### Which SAM should I use on `digits-noisy`?")
    assert "| LookSAM | 95.50 ± 0.00 % | 3 | 1.20× |" in markdown
    assert "not confirmed: its search best 91.00 %" in markdown
    page = render_html(data, findings=findings(data))
    assert page.index('id="advice"') < page.index('id="scatter"')
    assert 'data-verdict="variant"' in page
    rings = re.findall(r'class="chosen"[^>]*data-confirmed="([^"]+)"', page)
    assert sorted(rings) == ["looksam", "msam", "sam", "sgd"]  # every study's chosen point
    payload = re.search(r'id="data-advice">(.*?)</script>', page)
    assert payload is not None
    recommendation = json.loads(payload.group(1))["recommendation"]
    assert (recommendation["verdict"], recommendation["optimizer"]) == ("variant", "looksam")
    assert recommendation["params"] == {"k": 5}
