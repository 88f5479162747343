"""One feature definition: the streaming form equals the batch form."""
import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from numpy.testing import assert_allclose

from edge_detector.runtime import FeatureSpec, FeatureState, batch_features, feature_names
from edge_detector.runtime.features import FEATURE_FAMILIES
from tests.conftest import skab_file


def streamed(values, spec):
    state = FeatureState(spec, values.shape[1])
    return np.stack([state.update(row) for row in values])


ALL_FAMILIES = FeatureSpec(lags=(1, 5), families=FEATURE_FAMILIES)
RELATIVE = FeatureSpec(lags=(1, 5), families=tuple(f for f in FEATURE_FAMILIES if f != "abs"))


def test_streaming_equals_batch_on_synthetic():
    from edge_detector.export.data import generate
    values = generate(n=2000, seed=11).values
    for spec in (FeatureSpec(), ALL_FAMILIES):
        assert_allclose(streamed(values, spec), batch_features(values, spec), rtol=1e-6)


def test_streaming_equals_batch_on_skab():
    from edge_detector.export.data import load_csv
    values = load_csv(str(skab_file("other/13.csv"))).values
    for spec in (FeatureSpec(), ALL_FAMILIES):
        assert_allclose(streamed(values, spec), batch_features(values, spec), rtol=1e-6)


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
    assume(feature_names(spec, ["s"]))          # families=("mean",) with one window has no columns
    assert_allclose(streamed(values, spec), batch_features(values, spec), rtol=1e-6)


def test_features_ignore_the_level():
    # A constant offset (a drifted level) must not move any feature but the "abs" family's.
    from edge_detector.export.data import generate
    values = generate(n=1500, seed=5).values
    assert_allclose(batch_features(values + 1000.0, RELATIVE), batch_features(values, RELATIVE), atol=1e-9)
    absolute = FeatureSpec(windows=(5, 15), families=("abs",))
    assert_allclose(batch_features(values + 1000.0, absolute), batch_features(values, absolute) + 1000.0, rtol=1e-12)


def test_names_match_columns():
    for spec in (FeatureSpec(), ALL_FAMILIES):
        names = feature_names(spec, ["a", "b", "c"])
        assert batch_features(np.zeros((4, 3)), spec).shape == (4, len(names))
    assert feature_names(FeatureSpec(), ["a"]) == ["a:x-mean50", "a:mean5-mean50", "a:mean15-mean50", "a:diff1"]
    assert feature_names(RELATIVE, ["a", "b"])[-1] == "b:diff5"
    assert feature_names(ALL_FAMILIES, ["a", "b"])[-3:] == ["b:mean5", "b:mean15", "b:mean50"]


def test_a_spec_without_columns_is_refused():
    import pytest
    with pytest.raises(ValueError, match="yields no features"):
        batch_features(np.zeros((3, 1)), FeatureSpec(windows=(5,), families=("mean",)))


def test_unknown_family_is_refused():
    import pytest
    with pytest.raises(ValueError, match="unknown \\['skew'\\]"):
        FeatureSpec.from_dict({"windows": [5], "lags": [1], "families": ["level", "skew"]})


def test_a_spike_shows_in_its_sensor_only():
    values = np.ones((60, 2))
    values[-1, 0] = 10.0
    row = batch_features(values)[-1]
    per_sensor = len(row) // 2
    assert np.abs(row[:per_sensor]).max() > 5 and np.abs(row[per_sensor:]).max() == 0
