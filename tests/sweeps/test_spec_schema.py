"""Every key of the sweep spec, given wrong: wrong type, out of range, too long, control
characters, duplicated. Each is refused with one line naming where, before anything exists.

Parsing creates nothing (``sweep`` parses before it opens a store); ``tests/cli/test_refusals``
runs the cases that used to slip past parsing as real processes and checks that no file appears.
"""

from __future__ import annotations

from typing import Any

import pytest

from looksam.sweeps.spec import SpecError, parse_spec


def _set(path: str, value: Any) -> dict[str, Any]:
    """``{"a": {"b": value}}`` for ``"a.b"``; the base spec runs on the CPU."""
    data: dict[str, Any] = {"workload": {"device": "cpu"}}
    node = data
    *tables, key = path.split(".")
    for table in tables:
        node = node.setdefault(table, {})
    node[key] = value
    return data


LONG = "x" * 300
#: (key, bad value, what the one line must say)
CASES: list[tuple[str, Any, str]] = [
    # [sweep]
    ("sweep.name", 5, "name must be 1 to 100 printable characters"),
    ("sweep.name", "", "name must be 1 to 100 printable characters"),
    ("sweep.name", LONG, "got a 300-character name"),
    ("sweep.name", "a\x07b", "name must be 1 to 100 printable characters"),
    ("sweep.name", "a/b", "without '/'"),
    ("sweep.name", "..", "name must be 1 to 100 printable characters"),
    ("sweep.colour", "red", "colour"),
    # [workload]
    ("workload.name", 5, "workload"),
    ("workload.name", LONG, "unknown workload"),
    ("workload.name", "digits\x00", "unknown workload"),
    ("workload.epochs", "3", "epochs"),
    ("workload.epochs", 0, "epochs"),
    ("workload.epochs", True, "epochs"),
    ("workload.batch_size", 0, "batch_size"),
    ("workload.batch_size", 2.5, "batch_size"),
    ("workload.accumulate", 0, "accumulate must be an integer >= 1"),
    ("workload.accumulate", 2.5, "accumulate must be an integer >= 1"),
    ("workload.accumulate", True, "accumulate must be an integer >= 1"),
    ("workload.accumulate", "4", "accumulate must be an integer >= 1"),
    ("workload.device", "tpu", "device"),
    ("workload.device", "cpu\n", "device"),
    ("workload.amp", "fp8", "amp"),
    ("workload.data_dir", 5, "data_dir must be a directory path"),
    ("workload.data_dir", "", "data_dir must be a directory path"),
    ("workload.data_dir", "a\x01b", "data_dir must be a directory path"),
    # [optimizers]
    ("optimizers.names", "sam", "names must be a non-empty list"),
    ("optimizers.names", [], "names must be a non-empty list"),
    ("optimizers.names", ["sam", "sam"], "names lists 'sam' 2 times"),
    ("optimizers.names", ["nope"], "unknown optimizer 'nope'"),
    ("optimizers.names", [LONG], "unknown optimizer"),
    ("optimizers.names", [5], "unknown optimizer"),
    ("optimizers.base", "sam", "base"),
    ("optimizers.base", 5, "base"),
    # objective, sampler, pruner, order
    ("objective", "fastest", "objective"),
    ("objective", 5, "objective"),
    ("sampler.name", "random-ish", "sampler"),
    ("pruner", "sometimes", "pruner"),
    ("order", "random", "order"),
    # [budget]
    ("budget.n_trials", 0, "n_trials must be an integer >= 1"),
    ("budget.n_trials", "8", "n_trials must be an integer >= 1"),
    ("budget.n_trials", 2.5, "n_trials must be an integer >= 1"),
    ("budget.n_trials", True, "n_trials must be an integer >= 1"),
    ("budget.timeout", -1, "timeout must be > 0"),
    ("budget.timeout", "10", "timeout"),
    ("budget.seeds", [], "seeds must be a count >= 1 or a list of ints"),
    ("budget.seeds", [0, 0], "seeds lists 0 2 times"),
    ("budget.seeds", ["a"], "seeds must be a count >= 1 or a list of ints"),
    ("budget.seeds", 0, "seeds must be a count >= 1 or a list of ints"),
    # [confirm]
    ("confirm.seeds", -1, "seeds must be an integer >= 0"),
    ("confirm.seeds", "3", "seeds must be an integer >= 0"),
    ("confirm.seeds", True, "seeds must be an integer >= 0"),
    ("confirm.pick", "best-ish", "pick"),
    ("confirm.margin", 0, "margin is in accuracy points"),
    ("confirm.margin", 100, "margin is in accuracy points"),
    ("confirm.margin", "1", "margin"),
    # [timing]
    ("timing.rounds", 0, "rounds must be an integer >= 1"),
    ("timing.steps", "16", "steps must be an integer >= 1"),
    # [lr_scaling]
    ("lr_scaling.rule", "cubic", "rule"),
    ("lr_scaling.reference_batch_size", 0, "reference_batch_size must be an integer >= 1"),
    ("lr_scaling.warmup_fraction", 1.0, "warmup_fraction is a share of the training steps"),
    ("lr_scaling.rho_warmup_fraction", -0.1, "rho_warmup_fraction is a share"),
    # storage and tracking
    ("storage", "", "storage must be a URL"),
    ("storage", 5, "storage must be a URL"),
    ("storage", "sqlite:///a\x00b.db", "storage must be a URL"),
    ("tracking.uri", "", "uri must be an MLflow tracking URI"),
    ("tracking.uri", "http://a\nb", "uri must be an MLflow tracking URI"),
    ("tracking.enabled", "yes", "enabled must be true or false"),
    # [space.*] and [fixed.*]
    ("space.common.lr", {"low": 1.0, "high": 0.1}, "lr"),
    ("space.common.lr", {"choices": []}, "choices must be a non-empty list"),
    ("space.common.lr", "0.1", "must be a table"),
    ("space.sam.k", {"choices": [2, 5]}, "sam takes no 'k'"),
    ("space.nope.lr", {"low": 0.1, "high": 1.0}, "nope"),
    ("fixed.sam.k", 5, "sam takes no 'k'"),
    ("fixed.nope.lr", 0.1, "'nope' is not among the optimizers"),
    ("fixed.sam", 5, "must be a table of values"),
    # anything else
    ("bogus", 1, "bogus"),
]


@pytest.mark.parametrize(
    ("key", "value", "needle"), CASES, ids=[f"{k}={v!r}"[:60] for k, v, _ in CASES]
)
def test_every_key_refuses_a_bad_value_in_one_line(key: str, value: Any, needle: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(_set(key, value), "s.toml")
    message = str(caught.value)
    assert "\n" not in message, message
    assert message.startswith("s.toml"), message
    assert needle in message, message


def test_the_base_spec_itself_is_valid() -> None:
    """The boundary: every case above differs from a spec that parses."""
    spec = parse_spec(_set("sweep.name", "x" * 100), "s.toml")
    assert spec.name == "x" * 100


def test_a_name_two_entries_share_is_checked_against_the_section_s_own_entry() -> None:
    """ESAM's gamma is a share of the batch in (0, 1]; RWP's gamma is a noise scale >= 0. Each
    section is read against its own entry: 0.002 is RWP's, not ESAM's."""
    rwp = {"workload": {"device": "cpu"}, "optimizers": {"names": ["sgd", "rwp"]}}
    rwp["space"] = {"rwp": {"gamma": {"low": 0.002, "high": 0.05, "log": True}}}
    parse_spec(rwp, "spec.toml")
    esam = {"workload": {"device": "cpu"}, "optimizers": {"names": ["sgd", "esam"]}}
    esam["space"] = {"esam": {"gamma": {"low": 0.002, "high": 0.5}}}
    with pytest.raises(SpecError, match=r"\[space.esam\].gamma: gamma must be a number in"):
        parse_spec(esam, "spec.toml")
    esam["space"] = {"esam": {"gamma": {"low": 0.01, "high": 1.0}}}  # the boundary: valid
    parse_spec(esam, "spec.toml")
