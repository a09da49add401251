"""The paper-reproduction experiment (LookSAM's Figure 2: how fast g_s and g_v drift) and its page.

:func:`run_diagnosis` trains and measures; :func:`render_diagnosis_html` draws the result as one
offline HTML page with the sweep report's look.
"""

from __future__ import annotations

from looksam.diagnose.experiment import (
    DiagnoseConfig,
    DiagnosisResult,
    run_diagnosis,
    validate_diagnose_config,
    verdict_sentence,
)
from looksam.diagnose.page import render_diagnosis_html

__all__ = [
    "DiagnoseConfig",
    "DiagnosisResult",
    "render_diagnosis_html",
    "run_diagnosis",
    "validate_diagnose_config",
    "verdict_sentence",
]
