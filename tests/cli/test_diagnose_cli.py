"""`looksam-bench diagnose`: table, verdict, HTML and JSON written; bad input exits 2 cleanly."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from looksam.cli.app import app
from looksam.diagnose.experiment import DiagnosisResult

runner = CliRunner()
WIDE = {"COLUMNS": "200"}
SHORT = ["-w", "digits-noisy", "--steps", "12", "--device", "cpu"]
VERDICT = re.compile(r"g_v (drifts (clearly )?slower|does not drift slower)|no verdict")
# Any attribute that would make a browser fetch something: only in-page anchors and data: URIs.
EXTERNAL_REF = re.compile(r"""\b(?:src|href|action)\s*=\s*["']?(?![#"']|data:)""", re.I)


def test_diagnose_prints_the_table_and_verdict_and_writes_both_files(tmp_path: Path) -> None:
    page, data = tmp_path / "drift.html", tmp_path / "drift.json"
    args = [*SHORT, "--k", "1", "--k", "3", "--html", str(page), "--json", str(data)]
    result = runner.invoke(app, ["diagnose", *args], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "Gradient drift on digits-noisy" in result.output
    assert "g_v / g_s" in result.output
    assert VERDICT.search(result.output)
    assert f"wrote {page}" in result.output

    parsed = DiagnosisResult.from_dict(json.loads(data.read_text()))
    assert parsed.config.ks == (1, 3)
    assert parsed.steps == 12
    assert [s.k for s in parsed.summaries] == [1, 3]

    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert html.count("<svg") == 2  # one small multiple per k
    assert 'data-k="1"' in html
    assert 'data-k="3"' in html
    assert not EXTERNAL_REF.search(html), EXTERNAL_REF.search(html)
    assert "http://" not in html
    assert "https://" not in html
    assert "Content-Security-Policy" in html


def test_without_html_the_page_goes_to_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["diagnose", *SHORT, "--k", "1", "--k", "2"], env=WIDE)
    assert result.exit_code == 0, result.output
    page = Path("reports") / "diagnose-digits-noisy.html"
    assert page.is_file()
    assert f"wrote {page}" in result.output


def test_help_explains_the_numbers() -> None:
    result = runner.invoke(app, ["diagnose", "--help"], env=WIDE)
    assert result.exit_code == 0
    for needle in ("g_v", "relative drift", "--k", "--html", "1, 2, 5, 10"):
        assert needle in result.output


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["-w", "nope"], "unknown workload"),
        (["--k", "0"], "k=0"),
        (["--k", "2", "--k", "2"], "more than once"),
        (["--steps", "10"], "steps must be >= max(k) + 1 = 11"),
        (["--k", "5", "--steps", "3"], "steps=3"),
        (["--rho", "0"], "rho"),
        (["--lr", "0"], "lr"),
        (["--batch-size", "0"], "batch size"),
        (["--device", "tpu"], "unknown device"),
        (["-w", "cifar10-resnet18"], "--data-dir"),
        (["--batch-size", "100000", "--steps", "12"], "exceeds"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], needle: str
) -> None:
    monkeypatch.chdir(tmp_path)
    outputs = ["--html", "never.html", "--json", "never.json"]
    result = runner.invoke(app, ["diagnose", "--device", "cpu", *args, *outputs], env=WIDE)
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--html", "no/such/dir/d.html"], "does not exist"),
        (["--json", "no/such/dir/d.json"], "does not exist"),
        (["--html", "."], "is a directory"),
    ],
)
def test_unwritable_output_fails_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], needle: str
) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["diagnose", *SHORT, *args], env=WIDE)
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert "Traceback" not in result.output
    assert "Gradient drift" not in result.output  # no table: it never trained
    assert list(tmp_path.iterdir()) == []  # not even the default reports/ folder


def test_default_reports_path_blocked_by_a_file_fails_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("reports").write_text("not a folder")
    result = runner.invoke(app, ["diagnose", *SHORT], env=WIDE)
    assert result.exit_code == 2, result.output
    assert "cannot write under reports" in result.output


def test_a_diverged_run_exits_1_and_still_writes_what_it_measured(tmp_path: Path) -> None:
    page, data = tmp_path / "d.html", tmp_path / "d.json"
    args = ["--k", "1", "--k", "2", "--lr", "1e12", "--html", str(page), "--json", str(data)]
    result = runner.invoke(app, ["diagnose", *SHORT, "--steps", "30", *args], env=WIDE)
    assert result.exit_code == 1, result.output
    assert "diverged" in result.output
    assert "Training diverged after" in result.output
    assert json.loads(data.read_text())["status"] == "diverged"
    assert "status diverged" in page.read_text()
