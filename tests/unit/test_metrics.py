"""The loop-owned histograms expose what prometheus-client's own would."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from parley.gateway.metrics import LoopHistogram

BUCKETS = (1e-4, 3e-4, 1e-3, 1.0, 4)


def _samples(registry: CollectorRegistry) -> dict[str, float]:
    """Bucket, count and sum samples by name and labels (no ``_created``)."""
    return {
        f"{sample.name}{sorted(sample.labels.items())}": sample.value
        for family in registry.collect()
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


@given(st.lists(st.floats(min_value=0, max_value=10, allow_nan=False) | st.sampled_from(BUCKETS)))
def test_a_loop_histogram_counts_as_prometheus_client_does(values: list[float]) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    mine = LoopHistogram("h", "help", BUCKETS, registry=ours)
    reference = Histogram("h", "help", buckets=BUCKETS, registry=theirs)
    for value in values:
        mine.observe(value)
        reference.observe(value)
    got, want = _samples(ours), _samples(theirs)
    assert got.keys() == want.keys()
    for name, value in want.items():
        assert abs(got[name] - value) <= 1e-9 * max(1.0, abs(value)), name


def test_a_loop_histogram_renders_in_the_text_format() -> None:
    registry = CollectorRegistry()
    histogram = LoopHistogram("parley_x_seconds", "How long x took.", (0.5, 1), registry=registry)
    histogram.observe(0.5)
    histogram.observe(7)
    text = generate_latest(registry).decode()
    assert 'parley_x_seconds_bucket{le="0.5"} 1.0' in text
    assert 'parley_x_seconds_bucket{le="1.0"} 1.0' in text
    assert 'parley_x_seconds_bucket{le="+Inf"} 2.0' in text
    assert "parley_x_seconds_count 2.0" in text
    assert "parley_x_seconds_sum 7.5" in text
