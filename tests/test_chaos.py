"""The chaos soak (benchmarks/chaos.py) on a short stream: every line accounted for, through detect."""
import pytest

from tests.conftest import load_benchmark

pytestmark = pytest.mark.slow


def test_a_hostile_stream_is_accounted_for_line_by_line(trained, tmp_path):
    chaos = load_benchmark("chaos")
    _, bundle = trained
    lines, hostile = chaos.chaos_lines(12_000, 0.01, seed=5)
    assert len(hostile) == 120 and set(hostile.values()) == set(chaos.HOSTILE)        # every kind, 10 of each
    path = tmp_path / "chaos.csv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    run = chaos.run_detect(str(bundle), str(path), str(tmp_path), len(lines) - 1)
    checks = chaos.account(lines, hostile, run)
    assert run["returncode"] == 0
    assert checks["read_equals_lines"] and checks["read_equals_scored_plus_rejected"], checks["stats"]
    assert checks["rejected_are_the_hostile_lines"] and checks["events_are_the_other_lines"]
    assert "NOT REJECTED" not in str(checks["reasons_by_kind"])
