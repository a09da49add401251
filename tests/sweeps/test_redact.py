"""Passwords never reach logs: URL userinfo and secret query values are masked, nothing else."""

from __future__ import annotations

import pytest

from looksam.sweeps.redact import redact_text, redact_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://user:secret@host:5432/db", "postgresql://***@host:5432/db"),
        ("http://user:pw@host", "http://***@host"),
        ("https://alice:pw@mlflow.example.org/", "https://***@mlflow.example.org/"),
        ("mysql+pymysql://root:toor@localhost/optuna", "mysql+pymysql://***@localhost/optuna"),
        # SQLAlchemy accepts unencoded '@', ':' and '/' in the password: all of it goes, and
        # what is shown is at most what follows the last '@'
        ("postgresql://u:p@ss@host/db", "postgresql://***@host/db"),
        ("postgresql://u:ab/cd@host/db", "postgresql://***@host/db"),
        ("postgresql://alice:p@ss/w0rd@127.0.0.1:1/db", "postgresql://***@127.0.0.1:1/db"),
        ("postgresql://alice:p:a:ss@db/x", "postgresql://***@db/x"),
        ("postgresql://u:p%40ss@host/db", "postgresql://***@host/db"),
        ("http://u:pw@[::1]:5000/x", "http://***@[::1]:5000/x"),
        # a user name is user information too
        ("postgresql://optuna@db.internal/optuna", "postgresql://***@db.internal/optuna"),
        ("mysql+pymysql://root:@localhost/db", "mysql+pymysql://***@localhost/db"),
        ("postgresql://u@host/db?password=xyz", "postgresql://***@host/db?password=***"),
        # not a clean host after the last '@': the scheme alone
        ("postgresql://alice:pw@ho st/db", "postgresql://***"),
        ("postgresql://alice:pw@", "postgresql://***"),
        ("postgresql://alice:pw@<host>/db", "postgresql://***"),
        (
            "postgresql://host/db?sslmode=require&password=xyz&connect_timeout=5",
            "postgresql://host/db?sslmode=require&password=***&connect_timeout=5",
        ),
        ("http://host/api?access_token=abc", "http://host/api?access_token=***"),
    ],
)
def test_credentials_are_masked(url: str, expected: str) -> None:
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
        "git+https://github.com/org/repo@v1.0",
        "http://host/?max_tokens=5",
        "",
    ],
)
def test_urls_without_credentials_are_unchanged(url: str) -> None:
    assert redact_url(url) == url


def test_a_drivers_message_quoting_part_of_a_password_is_masked() -> None:
    """psycopg read 'p@ss/w0rd@…' as host 'ss': that piece must not be printed either."""
    url = "postgresql://alice:p@ss/w0rd@127.0.0.1:1/db"
    text = "failed to resolve host 'ss' for alice (sslmode=prefer, pass=p)"
    out = redact_text(text, urls=[url])
    assert out == "failed to resolve host '***' for *** (sslmode=prefer, pass=***)"
    # pieces are masked as whole tokens only: "ss" inside a word stays
    assert redact_text("class mismatch", urls=[url]) == "class mismatch"


def test_text_with_several_urls() -> None:
    text = (
        "could not connect to 'postgresql://alice:s3cr3t@db:5432/optuna' nor "
        "http://bob:hunter2@mlflow:5000/api, see http://127.0.0.1:5000 and sqlite:///runs/x.db"
    )
    out = redact_text(text)
    assert "s3cr3t" not in out
    assert "hunter2" not in out
    assert "'postgresql://***@db:5432/optuna'" in out
    assert "http://***@mlflow:5000/api," in out
    assert "alice" not in out
    assert "bob" not in out
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
