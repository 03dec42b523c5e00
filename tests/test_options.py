"""The options layer: every plug-in declares every option it takes, and values are checked one way."""

from __future__ import annotations

import math

import pytest

from selfmeta.anomaly import DETECTORS, AnomalyDetector
from selfmeta.data.tasks import TASK_ARGS, TASKS
from selfmeta.modalities import MODALITIES, VIEW_ARGS
from selfmeta.encoders import ENCODERS
from selfmeta.engine.config import TrainConfig
from selfmeta.errors import SelfmetaError
from selfmeta.meta import METALEARNERS
from selfmeta.methods import BUILT_BY_ENGINE, METHODS
from selfmeta.options import Option, check_options, declared_options

PLUGINS = (
    [(f"method {n}", METHODS.get(n), BUILT_BY_ENGINE) for n in METHODS]
    + [(f"meta-learner {n}", METALEARNERS.get(n), BUILT_BY_ENGINE) for n in METALEARNERS]
    + [(f"encoder {n}", ENCODERS.get(n), ("input_shape", *ENCODERS.get(n).inputs)) for n in ENCODERS]
    + [(f"views {n}", MODALITIES.get(n).views, (*VIEW_ARGS, *MODALITIES.get(n).views.inputs)) for n in MODALITIES]
    + [(f"input {n}", MODALITIES.get(n).preprocessor, ()) for n in MODALITIES if MODALITIES.get(n).preprocessor]
    + [(f"tasks {n}", TASKS.get(n), TASK_ARGS) for n in TASKS]
    + [(f"detector {n}", DETECTORS.get(n), ()) for n in DETECTORS]
    + [("training", TrainConfig, ()), ("AnomalyDetector", AnomalyDetector, AnomalyDetector.built)]
)


@pytest.mark.parametrize("what, cls, built", PLUGINS, ids=[p[0] for p in PLUGINS])
def test_every_option_is_declared_with_a_type_a_default_and_help(what, cls, built):
    declared = declared_options(cls, built)  # raises TypeError for an option without an Option(...)
    for d in declared.values():
        assert d.spec.help, f"{what}: option {d.name} has no help"
        if d.default is not None and d.kind != "dict":
            assert d.check(d.default, what) == d.default, f"{what}: the default of {d.name} fails its own check"
    # Declarations without a constructor argument are stale.
    stale = set(vars(cls).get("options", {})) - set(declared) - set(built)
    assert not stale, f"{what}: declared but not taken: {stale}"


class _Widget:
    options = {"rate": Option("a rate", gt=0, le=1), "steps": Option("steps", ge=1), "name": Option("", choices=("a", "b")),
               "span": Option("", ge=0, ordered=True), "sizes": Option("", ge=1), "on": Option("")}

    def __init__(self, rate: float = 0.5, steps: int | None = None, name: str = "a",
                 span: tuple[float, float] = (0.0, 1.0), sizes: tuple[int, ...] = (4,), on: bool = True) -> None:
        pass


@pytest.mark.parametrize("values, expected", [
    ({"rate": 1}, {"rate": 1.0}),
    ({"steps": 3.0}, {"steps": 3}),
    ({"steps": None}, {"steps": None}),
    ({"span": [0.2, 0.5]}, {"span": (0.2, 0.5)}),
    ({"sizes": [8, 4.0]}, {"sizes": (8, 4)}),
    ({"on": 0}, {"on": False}),
])
def test_values_are_converted(values, expected):
    out = check_options("widget", _Widget, values)
    assert out == expected and all(type(out[k]) is type(expected[k]) for k in out)


@pytest.mark.parametrize("values, message", [
    ({"rate": 0}, "widget option rate takes a number > 0 and <= 1, got 0; e.g. rate=0.5"),
    ({"rate": math.nan}, "rate takes a number > 0 and <= 1, got nan"),
    ({"rate": True}, "rate takes a number > 0 and <= 1, got True"),
    ({"rate": "0.5"}, "rate takes a number > 0 and <= 1, got '0.5'"),
    ({"rate": None}, "rate takes a number > 0 and <= 1, got None"),
    ({"steps": 2.5}, "steps takes null or an integer >= 1, got 2.5"),
    ({"steps": math.inf}, "steps takes null or an integer >= 1, got inf"),
    ({"name": "c"}, "name takes one of: a, b, got 'c'"),
    ({"span": [1.0, 0.5]}, "span takes a pair of numbers >= 0, low <= high, got [1.0, 0.5]"),
    ({"span": [1.0]}, "span takes a pair of numbers >= 0"),
    ({"sizes": []}, "sizes takes a list of integers >= 1, got []"),
    ({"sizes": [4, 0]}, "sizes takes a list of integers >= 1"),
    ({"on": "no"}, "on takes true or false, got 'no'"),
    ({"speed": 1}, "unknown option 'speed' for widget; valid: rate, steps, name, span, sizes, on"),
])
def test_bad_values_are_one_line_errors(values, message):
    with pytest.raises(SelfmetaError) as info:
        check_options("widget", _Widget, values)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_an_undeclared_constructor_argument_is_a_programming_error():
    class Undeclared:
        options = {"a": Option("a")}

        def __init__(self, a: int = 1, b: int = 2) -> None:
            pass

    with pytest.raises(TypeError, match="option 'b' has no Option"):
        declared_options(Undeclared)


def test_subclasses_inherit_and_extend_declarations():
    from selfmeta.meta.psco import PsCo

    declared = declared_options(PsCo, BUILT_BY_ENGINE)
    assert declared["temperature"].spec.gt == 0          # from MoCo
    assert declared["support_shots"].spec.ge == 1        # PsCo's own
