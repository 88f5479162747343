"""One feature definition: the streaming form equals the batch form."""
import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from numpy.testing import assert_allclose

from edge_detector.runtime import FeatureSpec, FeatureState, batch_features, feature_names
from edge_detector.runtime.features import FEATURE_FAMILIES
from tests.conftest import skab_file


def streamed(values, spec, seconds=None):
    state = FeatureState(spec, values.shape[1])
    times = seconds if seconds is not None else [None] * len(values)
    return np.stack([state.update(row, t) for row, t in zip(values, times)])


def minutes(n, start=1_700_000_000.0):
    return start + 60.0 * np.arange(n)


ALL_FAMILIES = FeatureSpec(lags=(1, 5), families=FEATURE_FAMILIES)
RELATIVE = FeatureSpec(lags=(1, 5), families=tuple(f for f in FEATURE_FAMILIES if f != "abs"))


def test_streaming_equals_batch_on_synthetic():
    from edge_detector.export.data import generate
    data = generate(n=2000, seed=11)
    for spec in (FeatureSpec(), ALL_FAMILIES):
        # bit for bit: the detector compares stage 1 with tau1, so a last-bit difference could flip a decision
        assert np.array_equal(streamed(data.values, spec, data.seconds),
                              batch_features(data.values, spec, data.seconds))


def test_streaming_equals_batch_on_skab():
    from edge_detector.export.data import load_csv
    data = load_csv(str(skab_file("other/13.csv")))
    for spec in (FeatureSpec(), ALL_FAMILIES):
        assert np.array_equal(streamed(data.values, spec, data.seconds), batch_features(data.values, spec, data.seconds))


def test_many_streams_equal_one_stream_each():
    from edge_detector.runtime.features import features_of_states
    values = np.random.default_rng(1).normal(size=(300, 3))
    seconds = minutes(300)
    states = [FeatureState(ALL_FAMILIES, 3) for _ in range(3)]
    rows = np.stack([features_of_states(states, [x, 2 * x, x], [t, t + 7.0, t])[1] for x, t in zip(values, seconds)])
    assert np.array_equal(rows, batch_features(2 * values, ALL_FAMILIES, seconds + 7.0))


@settings(max_examples=60, deadline=None)
@given(
    values=st.integers(1, 80).flatmap(lambda n: st.integers(1, 5).flatmap(
        lambda s: arrays(np.float64, (n, s), elements=st.floats(-1e6, 1e6, allow_nan=False)))),
    windows=st.lists(st.integers(1, 30), min_size=1, max_size=4, unique=True).map(lambda w: tuple(sorted(w))),
    lags=st.lists(st.integers(1, 20), min_size=1, max_size=3, unique=True).map(tuple),
    families=st.lists(st.sampled_from(FEATURE_FAMILIES), min_size=1, unique=True).map(tuple),
)
def test_streaming_equals_batch_on_random_data(values, windows, lags, families):
    spec = FeatureSpec(windows=windows, lags=lags, families=families)
    assume(feature_names(spec, ["s"] * values.shape[1]))   # ("mean",) with one window, ("cross",) of one sensor: none
    seconds = minutes(len(values), start=float(len(values)) * 1e5)
    assert np.array_equal(streamed(values, spec, seconds), batch_features(values, spec, seconds))


def test_features_ignore_the_level():
    # A constant offset (a drifted level) must not move any feature but the "abs" family's.
    from edge_detector.export.data import generate
    values, seconds = generate(n=1500, seed=5).values, minutes(1500)
    assert_allclose(batch_features(values + 1000.0, RELATIVE, seconds), batch_features(values, RELATIVE, seconds),
                    atol=1e-9)
    absolute = FeatureSpec(windows=(5, 15), families=("abs",))
    assert_allclose(batch_features(values + 1000.0, absolute), batch_features(values, absolute) + 1000.0, rtol=1e-12)


def test_names_match_columns():
    for spec in (FeatureSpec(), ALL_FAMILIES):
        names = feature_names(spec, ["a", "b", "c"])
        assert batch_features(np.zeros((4, 3)), spec, minutes(4)).shape == (4, len(names))
    assert feature_names(FeatureSpec(), ["a"]) == ["a:x-mean50", "a:mean5-mean50", "a:mean15-mean50", "a:diff1"]
    assert feature_names(FeatureSpec(lags=(1, 5), families=("diff",)), ["a", "b"])[-1] == "b:diff5"
    assert feature_names(ALL_FAMILIES, ["a", "b"])[-7:] == ["b:lag1-mean50", "b:lag5-mean50", "a*b:dev-product",
                                                           "time:day-sin", "time:day-cos", "time:week-sin",
                                                           "time:week-cos"]


def test_new_families_mean_what_they_say():
    # lag: the reading k steps back against the level; cross: the product of two sensors' deviations;
    # time: the phase of the day and of the week (Monday 00:00 UTC, 1970-01-05, is phase 0 of both)
    values = np.zeros((60, 2))
    values[-1] = [2.0, 3.0]
    values[-6, 0] = 4.0
    spec = FeatureSpec(windows=(5, 50), lags=(5,), families=("lag", "cross", "time"))
    row = batch_features(values, spec, 4 * 86400.0 + 60.0 * np.arange(60) - 59 * 60.0)[-1]
    level = values[-50:].mean(axis=0)
    assert_allclose(row[:2], [4.0 - level[0], -level[1]])
    assert_allclose(row[2], (2.0 - level[0]) * (3.0 - level[1]))
    assert_allclose(row[3:], [0.0, 1.0, 0.0, 1.0], atol=1e-12)
    assert FeatureSpec.from_names(["minmax", "max"]).families == ("max", "min")


def test_time_features_need_the_time():
    import pytest
    spec = FeatureSpec(families=("level", "time"))
    with pytest.raises(ValueError, match="need each reading's time"):
        batch_features(np.zeros((3, 1)), spec)
    state = FeatureState(spec, 1)
    with pytest.raises(ValueError, match="need each reading's time"):
        state.update(np.zeros(1))


def test_a_spec_without_columns_is_refused():
    import pytest
    with pytest.raises(ValueError, match="yields no features"):
        batch_features(np.zeros((3, 1)), FeatureSpec(windows=(5,), families=("mean",)))


def test_unknown_family_is_refused():
    import pytest
    with pytest.raises(ValueError, match="unknown \\['skew'\\] \\(known: .*cross, time, minmax\\)"):
        FeatureSpec.from_dict({"windows": [5], "lags": [1], "families": ["level", "skew"]})


def test_a_spike_shows_in_its_sensor_only():
    values = np.ones((60, 2))
    values[-1, 0] = 10.0
    row = batch_features(values)[-1]
    per_sensor = len(row) // 2
    assert np.abs(row[:per_sensor]).max() > 5 and np.abs(row[per_sensor:]).max() == 0
