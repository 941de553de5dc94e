from __future__ import annotations

from collections import Counter

import pytest

from bench.errors import BenchError, UnknownNameError
from bench.records.spec import RunSpec
from bench.run.grid import parse_ints, parse_overrides, parse_shots
from tests.conftest import expand


def make_spec(**changes) -> RunSpec:
    values = dict(method="unet", dataset="synthetic", task="ellipse", labels="mask", shots=10, draw=0,
                  seed=0, budget="quick")  # fmt: skip
    values.update(changes)
    return RunSpec(**values)


def test_run_id_ignores_override_order_and_changes_with_content() -> None:
    first = make_spec(overrides=parse_overrides(["lr=0.01", "epochs=5"]))
    second = make_spec(overrides=parse_overrides(["epochs=5", "lr=0.01"]))
    assert first.run_id == second.run_id
    assert first.canonical_json() == second.canonical_json()
    assert make_spec(seed=1).run_id != first.run_id
    assert make_spec(overrides=parse_overrides(["epochs=6", "lr=0.01"])).run_id != first.run_id


def test_spec_round_trips_through_its_canonical_form() -> None:
    spec = make_spec(shots=None, overrides=parse_overrides(["epochs=3", "encoder=resnet18"]))
    assert RunSpec.from_dict(spec.canonical()) == spec
    assert spec.canonical()["overrides"] == {"encoder": "resnet18", "epochs": 3}
    assert spec.shots_label == "all"


def test_override_values_are_typed() -> None:
    assert parse_overrides(["a=3", "b=0.5", "c=true", "d=resnet18"]) == (
        ("a", 3), ("b", 0.5), ("c", True), ("d", "resnet18"))  # fmt: skip
    with pytest.raises(BenchError, match="key=value"):
        parse_overrides(["nokey"])


@pytest.mark.parametrize("text", ["0", "-1", "ten", "1,0"])
def test_bad_shots_are_rejected(text: str) -> None:
    with pytest.raises(BenchError, match="--shots"):
        parse_shots(text)


def test_shots_and_seeds_parse() -> None:
    assert parse_shots("1, 10,all,10") == [1, 10, None]
    assert parse_ints("0,1,2", "--seeds") == [0, 1, 2]
    with pytest.raises(BenchError, match="--seeds takes integers from 0 to 4294967295, not -1"):
        parse_ints("0,-1", "--seeds")


def test_paper_grid_follows_the_protocol(fake_methods) -> None:
    planned = expand(["fake-threshold"], ["synthetic"], None, [10, None], None, None, None, "paper", "litemedsam")
    counts = Counter((p.spec.task, p.spec.shots) for p in planned)
    # 3 seeds × 3 draws for k-shot, 3 seeds (one draw) for all data, for each of the two tasks
    assert counts == {("ellipse", 10): 9, ("blob", 10): 9, ("ellipse", None): 3, ("blob", None): 3}
    assert all(p.skip_reason is None for p in planned)
    assert all(p.spec.backbone is None for p in planned), "a method without backbone must not key on it"


def test_quick_grid_is_one_seed_one_draw_unless_asked(fake_methods) -> None:
    planned = expand(["fake-threshold"], ["synthetic"], ["blob"], [10], None, None, None, "quick", "litemedsam")
    assert [(p.spec.seed, p.spec.draw) for p in planned] == [(0, 0)]
    planned = expand(["fake-threshold"], ["synthetic"], ["blob"], [10], None, [4, 5], 2, "quick", "litemedsam")
    assert sorted((p.spec.seed, p.spec.draw) for p in planned) == [(4, 0), (4, 1), (5, 0), (5, 1)]


def test_training_free_methods_run_once_per_task_and_regime(fake_methods) -> None:
    planned = expand(["fake-boxfill"], ["synthetic"], ["ellipse"], [1, 10, None], ["box", "box-noisy"],
                     None, None, "paper", "litemedsam")  # fmt: skip
    assert sorted(p.spec.labels for p in planned) == ["box", "box-noisy"]
    assert all(p.spec.shots is None and p.spec.seed == 0 and p.spec.draw == 0 for p in planned)


def test_skips_carry_a_reason(fake_methods) -> None:
    planned = expand(["fake-threshold", "fake-boxfill"], ["synthetic"], ["ellipse"], [10], ["mask", "box"],
                     [0], 1, "quick", "litemedsam")  # fmt: skip
    reasons = {(p.spec.method, p.spec.labels): p.skip_reason for p in planned}
    assert reasons[("fake-threshold", "mask")] is None
    assert reasons[("fake-threshold", "box")] == "fake-threshold learns from mask labels, not box"
    assert reasons[("fake-boxfill", "box")] is None
    assert "not mask" in reasons[("fake-boxfill", "mask")]


def test_unknown_names_fail_before_planning(fake_methods) -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'fake-threshold'"):
        expand(["fake-treshold"], ["synthetic"], None, [10], None, None, None, "quick", "litemedsam")
    with pytest.raises(BenchError, match="unknown task 'elipse'.*Did you mean 'ellipse'"):
        expand(["fake-threshold"], ["synthetic"], ["elipse"], [10], None, None, None, "quick", "litemedsam")
    with pytest.raises(BenchError, match="--labels"):
        expand(["fake-threshold"], ["synthetic"], None, [10], ["boxes"], None, None, "quick", "litemedsam")


def test_overrides_key_only_the_methods_that_have_them(fake_methods) -> None:
    overrides = parse_overrides(["encoder=resnet18"])
    planned = expand(["unet", "fake-threshold"], ["synthetic"], ["blob"], [10], None, [0], 1, "quick",
                     "litemedsam", overrides=overrides)  # fmt: skip
    by_method = {p.spec.method: p.spec for p in planned}
    assert by_method["unet"].overrides == (("encoder", "resnet18"),)
    assert by_method["fake-threshold"].overrides == ()
    with pytest.raises(BenchError, match="no selected method has the hyper-parameter encoder"):
        expand(["fake-threshold"], ["synthetic"], ["blob"], [10], None, [0], 1, "quick", "litemedsam",
               overrides=overrides)  # fmt: skip
