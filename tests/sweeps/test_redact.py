"""Passwords never reach logs: URL userinfo and secret query values are masked, nothing else."""

from __future__ import annotations

import pytest

from looksam.sweeps.redact import redact_text, redact_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://user:secret@host:5432/db", "postgresql://user:***@host:5432/db"),
        ("http://user:pw@host", "http://user:***@host"),
        ("https://alice:pw@mlflow.example.org/", "https://alice:***@mlflow.example.org/"),
        (
            "mysql+pymysql://root:toor@localhost/optuna",
            "mysql+pymysql://root:***@localhost/optuna",
        ),
        # SQLAlchemy accepts unencoded '@' and '/' in the password: all of it goes
        ("postgresql://u:p@ss@host/db", "postgresql://u:***@host/db"),
        ("postgresql://u:ab/cd@host/db", "postgresql://u:***@host/db"),
        ("postgresql://u:p%40ss@host/db", "postgresql://u:***@host/db"),
        ("http://u:pw@[::1]:5000/x", "http://u:***@[::1]:5000/x"),
        ("postgresql://u@host/db?password=xyz", "postgresql://u@host/db?password=***"),
        (
            "postgresql://host/db?sslmode=require&password=xyz&connect_timeout=5",
            "postgresql://host/db?sslmode=require&password=***&connect_timeout=5",
        ),
        ("http://host/api?access_token=abc", "http://host/api?access_token=***"),
    ],
)
def test_passwords_are_masked(url: str, expected: str) -> None:
    assert redact_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///runs/mlflow.db",
        "sqlite:////abs/path/optuna.db",
        "runs/mlflow.db",
        "/home/me/runs/x.db",
        "file:///tmp/mlruns",
        "http://127.0.0.1:5000",
        "http://host:8080/path@v2",  # a port and an '@' in the path are not credentials
        "http://localhost:5000/api?user=me@example.com",
        "http://[::1]:5000/x",
        "postgresql://optuna@db.internal/optuna",  # a user name alone is not a secret
        "mysql+pymysql://root:@localhost/db",  # empty password
        "git+https://github.com/org/repo@v1.0",
        "http://host/?max_tokens=5",
        "",
    ],
)
def test_urls_without_credentials_are_unchanged(url: str) -> None:
    assert redact_url(url) == url


def test_text_with_several_urls() -> None:
    text = (
        "could not connect to 'postgresql://alice:s3cr3t@db:5432/optuna' nor "
        "http://bob:hunter2@mlflow:5000/api, see http://127.0.0.1:5000 and sqlite:///runs/x.db"
    )
    out = redact_text(text)
    assert "s3cr3t" not in out
    assert "hunter2" not in out
    assert "'postgresql://alice:***@db:5432/optuna'" in out
    assert "http://bob:***@mlflow:5000/api," in out
    assert out.endswith("see http://127.0.0.1:5000 and sqlite:///runs/x.db")


def test_text_with_a_libpq_connection_string() -> None:
    out = redact_text("connection failed: host=db user=optuna password=hunter2 dbname=x")
    assert out == "connection failed: host=db user=optuna password=*** dbname=x"


def test_text_without_secrets_is_unchanged() -> None:
    text = "password authentication failed for user 'optuna' (max_tokens=5, port 5432)"
    assert redact_text(text) == text


def test_redaction_is_idempotent() -> None:
    once = redact_url("postgresql://u:p@ss@host/db?password=x")
    assert redact_url(once) == once
