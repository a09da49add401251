"""Sweep specs: the shipped ones parse; every malformed spec is a one-line SpecError."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest

from looksam.optim import get_optimizer_info
from looksam.sweeps.spec import (
    Dimension,
    SpecError,
    load_spec,
    parse_spec,
    reference_params,
    scaled_lr,
    suggest,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((REPO / "sweeps").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_specs_parse(path: Path) -> None:
    spec = load_spec(path)
    assert spec.optimizers
    for optimizer in spec.optimizers:
        assert spec.study_name(optimizer) == f"{spec.name}/{spec.workload.name}/{optimizer}"


def test_quick_spec_is_the_documented_default() -> None:
    spec = load_spec(REPO / "sweeps" / "quick.toml")
    assert spec.workload.name == "digits-noisy"
    assert spec.optimizers == ("sgd", "sam", "samk", "looksam")
    assert spec.objective == "pareto"
    assert spec.pruner == "none"
    assert {d.name for d in spec.space_for("looksam")} == {"lr", "rho", "k", "alpha", "batch_size"}
    # common dims only where accepted (rho is meaningless for sgd); batch size everywhere
    assert {d.name for d in spec.space_for("sgd")} == {"lr", "batch_size"}


def test_overrides_replace_spec_keys() -> None:
    spec = load_spec(
        REPO / "sweeps" / "quick.toml",
        {"n_trials": 3, "seeds": 2, "epochs": 5, "optimizers": ["sgd", "looksam"],
         "storage": "journal:x.log", "no_mlflow": True},
    )  # fmt: skip
    assert spec.n_trials == 3
    assert spec.seeds == (0, 1)
    assert spec.workload.epochs == 5
    assert spec.optimizers == ("sgd", "looksam")
    assert spec.storage == "journal:x.log"
    assert spec.tracking_uri is None


def test_registry_spaces_fill_what_the_table_does_not_set(tmp_path: Path) -> None:
    """`registry = true`: the entry's search ranges, except where the table gives its own."""
    text = (
        "[optimizers]\nnames = ['latesam', 'looksam']\n"
        "[space.latesam]\nregistry = true\nrho = {low = 0.2, high = 0.4}\n"
        "[space.looksam]\nregistry = false\nk = {low = 2, high = 3}\n"
    )
    spec = load_spec(_spec(text, tmp_path))
    late = {d.name: d for d in spec.space_for("latesam")}
    assert (late["rho"].low, late["rho"].high, late["rho"].log) == (0.2, 0.4, False)  # its own
    fraction = next(hp for hp in get_optimizer_info("latesam").hyperparameters if hp.name != "rho")
    assert fraction.search is not None
    assert (late[fraction.name].low, late[fraction.name].high) == fraction.search
    assert set(late) == {"rho", fraction.name}
    assert [d.name for d in spec.space_for("looksam")] == ["k"]  # false: nothing added
    k = next(d for d in load_spec(_spec("[space.looksam]\nregistry = true\n", tmp_path))
             .space_for("looksam") if d.name == "k")  # fmt: skip
    assert k.integer  # the entry's kind decides


def _spec(text: str, tmp_path: Path) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("objective = \n", "line 1"),
        ("[sweep]\nname = 'x'\ncolour = 'red'\n", "unknown key(s) colour; valid: name"),
        ("flavour = 1\n", "unknown key(s) flavour"),
        ("[space.looksam]\nrho = {low = 1.0, high = 0.1}\n", "low (1) is greater than high (0.1)"),
        ("[space.looksam]\nk = {low = 0, high = 3}\n", "k must be"),
        (
            "[space.looksam]\nrho = {low = 0, high = 1, log = true}\n",
            "log-scaled range needs low > 0",
        ),
        ("[space.looksam]\nrho = {low = 0.1}\n", "needs both low and high"),
        ("[space.looksam]\nzeta = {low = 0.1, high = 1}\n", "cannot search 'zeta'"),
        ("[space.looksam]\ngamma = {low = 0.1, high = 1}\n", "looksam takes no 'gamma'"),
        ("[space.sgd]\nrho = {low = 0.1, high = 1}\n", "sgd takes no 'rho'"),
        ("objective = 'speed'\n", "unknown objective 'speed'"),
        ("[sampler]\nname = 'cma'\n", "unknown sampler 'cma'"),
        ("pruner = 'patient'\n", "unknown pruner 'patient'"),
        ("pruner = 'median'\n", "cannot be used with the pareto objective"),
        ("[optimizers]\nnames = ['adagrad']\n", "unknown optimizer 'adagrad'"),
        ("[optimizers]\nbase = 'rmsprop'\n", "unknown base 'rmsprop'"),
        ("[workload]\nname = 'imagenet-9000'\n", "unknown workload"),
        ("[workload]\nepochs = 0\n", "epochs must be an integer >= 1"),
        ("[budget]\nn_trials = 0\n", "n_trials must be an integer >= 1"),
        ("[budget]\nseeds = 'many'\n", "seeds must be"),
        ("[space.common]\nbatch_size = {choices = [0, 64]}\n", "batch_size values"),
        ("[lr_scaling]\nrule = 'cubic'\n", "unknown rule"),
        (
            "[sampler]\nname = 'grid'\n[space.looksam]\nrho = {low = 0.1, high = 1}\n",
            "grid sampler needs a list of values for rho",
        ),
        ("[sampler]\nname = 'grid'\n[budget]\nn_trials = 4\n", "n_trials cannot be set"),
        ("[space.looksam]\nregistry = 'yes'\n", "registry must be true or false"),
    ],
)
def test_bad_specs_raise_one_clear_error(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(_spec(text, tmp_path))
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_spec_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such sweep spec"):
        load_spec(tmp_path / "nope.toml")


def test_suggest_turns_the_space_into_optuna_calls() -> None:
    space = (
        Dimension("lr", 0.01, 0.2, log=True),
        Dimension("k", 2, 10, integer=True),
        Dimension("batch_size", choices=(32, 64), integer=True),
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    params = suggest(trial, space)
    assert 0.01 <= params["lr"] <= 0.2
    assert isinstance(params["k"], int)
    assert 2 <= params["k"] <= 10
    assert params["batch_size"] in (32, 64)
    dists = trial.distributions
    assert dists["lr"].log is True
    assert isinstance(dists["k"], optuna.distributions.IntDistribution)
    assert isinstance(dists["batch_size"], optuna.distributions.CategoricalDistribution)


def test_reference_point_is_the_papers_clipped_into_the_space() -> None:
    space = (
        Dimension("rho", 0.1, 1.0, log=True),  # 0.05 lies below: clipped to 0.1
        Dimension("k", 2, 10, integer=True),
        Dimension("alpha", 0.1, 1.0),
        Dimension("lr", 0.01, 0.2, log=True),
        Dimension("batch_size", choices=(32, 64), integer=True),
    )
    registry = get_optimizer_info("looksam").defaults()  # each paper's operating point
    point = reference_params(space, {**registry, "lr": 0.05, "batch_size": 64})
    assert point == {"rho": 0.1, "k": 5, "alpha": 0.7, "lr": 0.05, "batch_size": 64}
    no_default = reference_params((Dimension("lr", 0.01, 1.0, log=True),), {})
    assert no_default["lr"] == pytest.approx(0.1)  # geometric middle of a log range


def test_lr_scaling_rules() -> None:
    assert scaled_lr(0.1, 256, "none", 128) == 0.1
    assert scaled_lr(0.1, 256, "linear", 128) == pytest.approx(0.2)
    assert scaled_lr(0.1, 512, "sqrt", 128) == pytest.approx(0.2)
    assert math.isclose(scaled_lr(0.1, 64, "sqrt", 128), 0.1 / math.sqrt(2))


def test_spec_without_tables_gets_defaults() -> None:
    spec = parse_spec({})
    assert spec.storage.startswith("sqlite:///")
    assert spec.tracking_uri is not None
    assert spec.tracking_uri.startswith("sqlite:///")


def test_a_grid_budget_is_the_size_of_each_studys_grid(tmp_path: Path) -> None:
    text = (
        "[optimizers]\nnames = ['sgd', 'samk', 'looksam']\n[sampler]\nname = 'grid'\n"
        "[space.common]\nk = {choices = [1, 5, 10]}\n"
        "[space.looksam]\nalpha = {choices = [0.0, 0.7]}\n"
    )
    spec = load_spec(_spec(text, tmp_path))
    assert [spec.budget_for(o) for o in spec.optimizers] == [1, 3, 6]  # sgd takes no k
    assert spec.grid_for("looksam") == {"k": [1, 5, 10], "alpha": [0.0, 0.7]}
    assert spec.grid_for("sgd") == {}


def test_large_batch_recipe_reaches_every_run() -> None:
    from looksam.sweeps._trial import trial_configs

    spec = parse_spec(
        {
            "optimizers": {"names": ["lamb", "layerlooksam"], "base": "lamb"},
            "fixed": {"layerlooksam": {"lr": 0.004}},
            "lr_scaling": {
                "rule": "sqrt",
                "reference_batch_size": 256,
                "warmup_fraction": 0.1,
                "rho_warmup_fraction": 0.2,
            },
            "budget": {"seeds": 2},
        }
    )
    runs = trial_configs(spec, "layerlooksam", {"batch_size": 4096})
    assert [r.seed for r in runs] == [0, 1]
    assert all(r.warmup_fraction == 0.1 for r in runs)
    assert all(r.rho_warmup_fraction == 0.2 for r in runs)
    assert runs[0].lr == pytest.approx(0.004 * 4)  # √(4096 / 256) = 4
    assert runs[0].base == "lamb"
    with pytest.raises(SpecError, match=r"warmup_fraction is a share .* in \[0, 1\)"):
        parse_spec({"lr_scaling": {"warmup_fraction": 1.0}})
    with pytest.raises(SpecError, match="rho_warmup_fraction"):
        parse_spec({"lr_scaling": {"rho_warmup_fraction": -0.1}})


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ({"seeds": 0}, "seeds must be a count >= 1"),
        ({"n_trials": 0}, "n_trials must be an integer >= 1"),
        ({"timeout": 0}, "timeout must be > 0"),
        ({"epochs": 0}, "epochs must be an integer >= 1"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"optimizers": []}, "names must be a non-empty list"),
        ({"base": ""}, "unknown base ''"),
        ({"objective": ""}, "unknown objective ''"),
        ({"sampler": ""}, "unknown sampler ''"),
        ({"pruner": ""}, "unknown pruner ''"),
        ({"storage": ""}, "storage must be"),
        ({"tracking_uri": ""}, "uri must be"),
        ({"workload": ""}, "unknown workload ''"),
        ({"device": "foo"}, "unknown device 'foo'"),
        ({"amp": "fp32"}, "unknown amp 'fp32'"),
        ({"data_dir": ""}, "data_dir must be"),
    ],
)
def test_a_falsy_override_is_checked_never_replaced_by_the_spec(
    override: dict[str, object], needle: str
) -> None:
    """`--seeds 0` is an error, not the spec's seeds: present (not None) means given."""
    spec_values = {
        "budget": {"seeds": 3, "n_trials": 4, "timeout": 60},
        "workload": {"epochs": 2, "batch_size": 64},
        "optimizers": {"names": ["sgd"], "base": "sgd"},
        "objective": "accuracy",
        "sampler": {"name": "random"},
        "pruner": "median",
        "storage": "journal:x.log",
        "tracking": {"uri": "sqlite:///m.db"},
    }
    key = next(iter(override))
    with pytest.raises(SpecError) as info:
        parse_spec(spec_values, "s.toml", override)
    message = str(info.value)
    assert needle in message
    assert f"(override {key})" in message  # says where the bad value came from
    assert "\n" not in message


def test_none_overrides_keep_the_spec_values() -> None:
    spec = parse_spec(
        {"budget": {"seeds": [4, 5]}, "objective": "accuracy"},
        "s.toml",
        {"seeds": None, "objective": None, "optimizers": None, "no_mlflow": False},
    )
    assert spec.seeds == (4, 5)
    assert spec.objective == "accuracy"
    assert spec.tracking_uri is not None


def test_confirm_pick_defaults_to_cheapest_within_one_point() -> None:
    spec = parse_spec({"sweep": {"name": "s"}})
    assert (spec.confirm_pick, spec.confirm_margin) == ("cheapest", 0.01)
    half = parse_spec({"sweep": {"name": "s"}, "confirm": {"pick": "best", "margin": 0.5}})
    assert (half.confirm_pick, half.confirm_margin) == ("best", 0.005)


@pytest.mark.parametrize(
    ("confirm", "needle"),
    [
        ({"pick": "middle"}, "unknown pick 'middle'"),
        ({"margin": 0}, "between 0 and 100"),
        ({"margin": 100}, "between 0 and 100"),
        ({"margin": "1"}, "margin must be a finite number"),
    ],
)
def test_bad_confirm_settings_are_one_line(confirm: dict[str, object], needle: str) -> None:
    with pytest.raises(SpecError, match=needle):
        parse_spec({"sweep": {"name": "s"}, "confirm": confirm})


def test_accumulate_overrides_the_spec_and_reaches_every_trial() -> None:
    spec = load_spec(REPO / "sweeps" / "quick.toml", {"accumulate": 4})
    assert spec.workload.accumulate == 4
    assert spec.workload.run_config("sam").micro_batches == 4
    assert load_spec(REPO / "sweeps" / "quick.toml").workload.accumulate == 1  # the default
