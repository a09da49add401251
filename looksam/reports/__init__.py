"""Renderers: result data → terminal tables, offline HTML, Markdown and JSON.

Pure functions of :class:`~looksam.reports.model.SweepData` (and the optimizer registry and
:mod:`looksam.stats`): importing them never loads the training loop, Optuna or MLflow, so a
notebook can render a saved sweep cheaply. Loading the data is :mod:`looksam.sweeps.results`' job.
"""

from __future__ import annotations

from looksam.reports.advice import Advice, advice_from, advice_json, decide
from looksam.reports.findings import Finding, findings
from looksam.reports.html import render_html
from looksam.reports.leaderboard import leaderboard, leaderboard_json
from looksam.reports.markdown import render_markdown
from looksam.reports.model import StudyData, SweepData, TrialPoint
from looksam.reports.summary import best_trial, cost_vs_base, pareto_front, speed_vs_base
from looksam.reports.terminal import advice_report, terminal_report

__all__ = [
    "Advice",
    "Finding",
    "StudyData",
    "SweepData",
    "TrialPoint",
    "advice_from",
    "advice_json",
    "advice_report",
    "best_trial",
    "cost_vs_base",
    "decide",
    "findings",
    "leaderboard",
    "leaderboard_json",
    "pareto_front",
    "render_html",
    "render_markdown",
    "speed_vs_base",
    "terminal_report",
]
