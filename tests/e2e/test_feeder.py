"""The demo's model feeder: its schedule, its PSI and what it sends on the wire."""

from __future__ import annotations

import math
import socket
import threading

import numpy as np
import pytest
from datadog.dogstatsd import DogStatsd

from examples.model_feeder import (
    SPLIT_FEATURE,
    PsiReference,
    Schedule,
    build_feeder,
    serve,
    split_populations,
    train,
)

SEED = 7


class FakeClock:
    """Monotonic seconds that only move when the feeder sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds


class RecordingClient:
    """Keep every metric the feeder sends, in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, float, tuple[str, ...]]] = []

    def timing(self, metric, value, tags=None):
        self.sent.append(("ms", metric, value, tuple(tags or ())))

    def increment(self, metric, value=1, tags=None):
        self.sent.append(("c", metric, value, tuple(tags or ())))

    def gauge(self, metric, value, tags=None):
        self.sent.append(("g", metric, value, tuple(tags or ())))


@pytest.fixture(scope="module")
def trained():
    populations = split_populations(SEED)
    model, reference = train(populations)
    return populations, model, reference


@pytest.mark.parametrize(
    ("elapsed", "phase"),
    [
        (0.0, "normal"),
        (14.99, "normal"),
        (15.0, "drift"),
        (29.99, "drift"),
        (30.0, "recovered"),
        (50.0, "recovered"),
    ],
)
def test_phase_at(elapsed, phase):
    assert Schedule(51, 15, 30, 3).phase_at(elapsed) == phase


def test_windows_are_cut_at_phase_boundaries():
    windows = list(
        Schedule(duration=14, drift_start=6, drift_end=10, window=4).windows()
    )

    assert [(w.start, w.end, w.phase) for w in windows] == [
        (0, 4, "normal"),
        (4, 6, "normal"),
        (6, 10, "drift"),
        (10, 14, "recovered"),
    ]
    assert [w.index for w in windows] == [0, 1, 2, 3]


def test_a_schedule_without_drift_is_all_normal():
    windows = list(Schedule(duration=6, drift_start=6, drift_end=6, window=3).windows())

    assert [(w.start, w.end, w.phase) for w in windows] == [
        (0, 3, "normal"),
        (3, 6, "normal"),
    ]


@pytest.mark.parametrize(
    ("duration", "drift_start", "drift_end", "window"),
    [(10, 6, 4, 1), (10, 2, 11, 1), (10, -1, 4, 1), (10, 2, 4, 0)],
)
def test_schedule_refuses_impossible_timings(duration, drift_start, drift_end, window):
    with pytest.raises(ValueError):
        Schedule(duration, drift_start, drift_end, window)


def test_psi_matches_the_formula_by_hand():
    # Two bins split at 4.5; the reference fills both, the sample only the first.
    reference = PsiReference(np.arange(10.0), bins=2, pseudo_count=0.5)
    actual = np.array([4.5, 0.5]) / 5
    expected = np.array([5.5, 5.5]) / 11
    by_hand = float(np.sum((actual - expected) * np.log(actual / expected)))

    assert reference.edges.tolist() == [4.5]
    assert reference.score(np.zeros(4)) == pytest.approx(by_hand)
    assert by_hand == pytest.approx(0.8789, abs=1e-4)


def test_psi_of_identical_samples_is_zero():
    rng = np.random.default_rng(SEED)
    sample = rng.normal(size=500)

    assert PsiReference(sample).score(sample) == pytest.approx(0.0, abs=1e-12)


def test_psi_stays_finite_when_every_value_falls_outside_the_reference():
    reference = PsiReference(np.linspace(0.0, 1.0, 100), bins=5)
    psi = reference.score(np.full(50, 7.0))

    assert math.isfinite(psi)
    assert psi > 2.0


def test_psi_refuses_an_empty_sample():
    with pytest.raises(ValueError, match="no values"):
        PsiReference(np.arange(10.0)).score(np.array([]))


def test_populations_are_split_on_the_median(trained):
    populations, _, _ = trained
    column = populations.feature_names.index(SPLIT_FEATURE)

    assert populations.train_x[:, column].max() <= populations.cut
    assert populations.held_out_x[:, column].max() <= populations.cut
    assert populations.shifted_x[:, column].min() > populations.cut
    assert (len(populations.train_x), len(populations.held_out_x)) == (199, 86)
    assert len(populations.shifted_x) == 284


def test_held_out_rows_score_stable_and_shifted_rows_drift(trained):
    populations, model, reference = trained
    held_out = model.predict_proba(populations.held_out_x)[:, 0]
    shifted = model.predict_proba(populations.shifted_x)[:, 0]

    assert reference.score(held_out) < 0.1
    assert reference.score(shifted) > 0.2
    assert reference.score(shifted) > 10 * reference.score(held_out)


def test_the_same_seed_serves_the_same_rows():
    first, second = build_feeder(SEED), build_feeder(SEED)
    phases = ["normal"] * 50 + ["drift"] * 50

    assert np.array_equal(first.reference.edges, second.reference.edges)
    rows_first = [first.stream.next_row(phase) for phase in phases]
    rows_second = [second.stream.next_row(phase) for phase in phases]
    assert np.array_equal(np.vstack(rows_first), np.vstack(rows_second), equal_nan=True)


def test_serve_reports_each_phase_with_its_psi():
    client, clock = RecordingClient(), FakeClock()
    schedule = Schedule(duration=6, drift_start=2, drift_end=4, window=2)

    reports = serve(
        build_feeder(SEED), schedule, 100, client, clock=clock, sleep=clock.sleep
    )

    assert clock.now == 6
    assert [r.window.phase for r in reports] == ["normal", "drift", "recovered"]
    assert [r.predictions for r in reports] == [200, 200, 200]
    assert reports[0].psi < 0.2
    assert reports[1].psi > 0.2
    assert reports[2].psi < 0.2
    gauges = [value for kind, _, value, _ in client.sent if kind == "g"]
    assert gauges == [r.psi for r in reports]
    errors = [s for s in client.sent if s[1] == "model.errors"]
    assert len(errors) == sum(r.errors for r in reports) > 0
    assert {s[3] for s in errors} == {("error:missing_value",)}
    timings = [s for s in client.sent if s[0] == "ms"]
    assert len(timings) + len(errors) == 600
    assert all(value > 0 for _, _, value, _ in timings)


def test_serve_sends_dogstatsd_datagrams_over_a_unix_socket(tmp_path):
    path = str(tmp_path / "dsd.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    received: list[bytes] = []

    def read() -> None:
        # The client blocks once ten datagrams wait, so read while it sends.
        while (datagram := server.recv(8192)) != b"END":
            received.append(datagram)

    reader = threading.Thread(target=read)
    reader.start()
    tags = ["model:m1", "project:p1", "env:demo"]
    statsd = DogStatsd(
        socket_path=path,
        disable_telemetry=True,
        socket_timeout=None,
        constant_tags=tags,
    )
    clock = FakeClock()
    schedule = Schedule(duration=2, drift_start=1, drift_end=2, window=1)
    try:
        reports = serve(
            build_feeder(SEED), schedule, 20, statsd, clock=clock, sleep=clock.sleep
        )
    finally:
        statsd.close_socket()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as closer:
            closer.sendto(b"END", path)
        reader.join()
        server.close()

    lines = [line for d in received for line in d.decode().splitlines()]
    suffix = "|#model:m1,project:p1,env:demo"
    counts = [line for line in lines if line == "model.predictions:1|c" + suffix]
    latencies = [
        line for line in lines if line.startswith("model.prediction.latency_ms:")
    ]
    gauges = [line for line in lines if line.startswith("model.drift.psi:")]
    errors = [line for line in lines if line.startswith("model.errors:")]
    assert len(counts) == 40
    assert len(latencies) + len(errors) == 40
    assert all(line.endswith("|ms" + suffix) for line in latencies)
    assert [
        float(line.split(":")[1].split("|")[0]) for line in gauges
    ] == pytest.approx([r.psi for r in reports], rel=1e-6)
    assert all(line.endswith("|g" + suffix) for line in gauges)
    assert len(lines) == len(counts) + len(latencies) + len(gauges) + len(errors)
