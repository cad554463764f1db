"""Serve a real scikit-learn model and report its health to Tocsin over DogStatsD.

The model is a logistic regression that screens breast tumours, trained on the
Wisconsin diagnostic data that ships inside scikit-learn. It is trained only on
the smaller tumours (``mean radius`` at or below the median), the population of
the clinic it was built for. The feeder then serves rows in three phases:

* ``normal``: held-out rows of the training population;
* ``drift``: the larger tumours, a population the model has never seen;
* ``recovered``: the held-out rows again.

Every prediction is timed and counted; a small share of rows arrives with a
missing value, which the model rejects, and those are counted as errors. At the
end of every window the feeder sends the population stability index (PSI) of
the window's predicted probabilities against the model's scores on its training
data, so the drift phase raises it far above 0.2 and the recovery lowers it.

Run ``python examples/model_feeder.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
from datadog.dogstatsd import DogStatsd
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_predict, train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

Phase = Literal["normal", "drift", "recovered"]

#: The feature whose median separates the two populations.
SPLIT_FEATURE = "mean radius"
#: Index of the malignant class in the dataset's targets.
MALIGNANT = 0


@dataclass(frozen=True)
class Window:
    """A stretch of the schedule over which one PSI is computed."""

    index: int
    start: float
    end: float
    phase: Phase


@dataclass(frozen=True)
class Schedule:
    """Which population is served when, in seconds since the feeder started."""

    duration: float
    drift_start: float
    drift_end: float
    window: float

    def __post_init__(self) -> None:
        if not 0 <= self.drift_start <= self.drift_end <= self.duration:
            raise ValueError("need 0 <= drift start <= drift end <= duration")
        if self.window <= 0:
            raise ValueError("the window must be longer than 0 s")

    @property
    def drifts(self) -> bool:
        """Whether the drift phase lasts at all (equal start and end: no drift)."""
        return self.drift_start < self.drift_end

    def phase_at(self, elapsed: float) -> Phase:
        """Return the phase that serves at ``elapsed`` seconds."""
        if elapsed < self.drift_start or not self.drifts:
            return "normal"
        if elapsed < self.drift_end:
            return "drift"
        return "recovered"

    def windows(self) -> Iterator[Window]:
        """Yield the windows in order, each cut short at a phase boundary.

        Cutting at the boundaries keeps every window within one population, so
        each reported PSI describes one phase, not a blend of two.
        """
        boundaries = {self.duration}
        if self.drifts:
            boundaries |= {self.drift_start, self.drift_end}
        start, index = 0.0, 0
        while start < self.duration:
            end = min([start + self.window] + [b for b in boundaries if b > start])
            yield Window(index, start, end, self.phase_at(start))
            start, index = end, index + 1


class PsiReference:
    """Quantile bins fitted on a reference sample, to score samples against it.

    A pseudo-count is added to every bin of both samples, so a bin that one of
    them leaves empty contributes a large but finite term instead of infinity.
    """

    def __init__(
        self, reference: np.ndarray, bins: int = 5, pseudo_count: float = 0.5
    ) -> None:
        reference = np.asarray(reference, dtype=float)
        inner = np.linspace(0.0, 1.0, bins + 1)[1:-1]
        # Tied quantiles would make empty bins by construction; merge them.
        self.edges = np.unique(np.quantile(reference, inner))
        self.pseudo_count = pseudo_count
        self.expected = self.proportions(reference)

    def proportions(self, values: np.ndarray) -> np.ndarray:
        """Return the share of ``values`` in each bin, pseudo-counts included."""
        positions = np.searchsorted(self.edges, np.asarray(values), side="right")
        counts = np.bincount(positions, minlength=len(self.edges) + 1)
        counts = counts + self.pseudo_count
        return counts / counts.sum()

    def score(self, values: np.ndarray) -> float:
        """Return the PSI of ``values`` against the reference.

        :raises ValueError: if ``values`` is empty.
        """
        if len(values) == 0:
            raise ValueError("no values to score")
        actual = self.proportions(values)
        return float(np.sum((actual - self.expected) * np.log(actual / self.expected)))


@dataclass(frozen=True)
class Populations:
    """The dataset cut in two on :data:`SPLIT_FEATURE`."""

    feature_names: tuple[str, ...]
    cut: float
    train_x: np.ndarray
    train_y: np.ndarray
    #: Rows of the training population the model never saw.
    held_out_x: np.ndarray
    #: Every row of the other population (above the cut).
    shifted_x: np.ndarray


def split_populations(seed: int, held_out: float = 0.3) -> Populations:
    """Load the bundled dataset and split it into the two populations."""
    data = load_breast_cancer()
    column = list(data.feature_names).index(SPLIT_FEATURE)
    cut = float(np.median(data.data[:, column]))
    small = data.data[:, column] <= cut
    train_x, held_out_x, train_y, _ = train_test_split(
        data.data[small],
        data.target[small],
        test_size=held_out,
        random_state=seed,
        stratify=data.target[small],
    )
    return Populations(
        feature_names=tuple(data.feature_names),
        cut=cut,
        train_x=train_x,
        train_y=train_y,
        held_out_x=held_out_x,
        shifted_x=data.data[~small],
    )


def train(populations: Populations) -> tuple[Pipeline, PsiReference]:
    """Fit the model and the PSI reference on the training population.

    The reference is the model's out-of-fold scores on its training rows: scores
    on rows a model was fitted on are more confident than on new rows, and that
    gap alone would read as drift.
    """
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    scores = cross_val_predict(
        model, populations.train_x, populations.train_y, cv=5, method="predict_proba"
    )
    model.fit(populations.train_x, populations.train_y)

    return model, PsiReference(scores[:, MALIGNANT])


class RowStream:
    """Rows the model is asked about: shuffled passes over one population.

    Each population keeps its own pass, so the recovery resumes where the normal
    phase stopped. A share of ``missing_rate`` rows loses one value, the way a
    broken upstream join delivers them.
    """

    def __init__(
        self,
        populations: Populations,
        rng: np.random.Generator,
        missing_rate: float,
    ) -> None:
        self._rng = rng
        self._missing_rate = missing_rate
        self._passes = {
            "normal": self._cycle(populations.held_out_x),
            "drift": self._cycle(populations.shifted_x),
        }
        self._passes["recovered"] = self._passes["normal"]

    def _cycle(self, rows: np.ndarray) -> Iterator[np.ndarray]:
        while True:
            for index in self._rng.permutation(len(rows)):
                yield rows[index]

    def next_row(self, phase: Phase) -> np.ndarray:
        """Return the next row of ``phase`` as a one-row matrix."""
        row = next(self._passes[phase]).copy()
        if self._rng.random() < self._missing_rate:
            row[self._rng.integers(len(row))] = math.nan

        return row.reshape(1, -1)


@dataclass
class Feeder:
    """A trained model, its drift reference and the rows it will serve."""

    model: Pipeline
    reference: PsiReference
    stream: RowStream


def build_feeder(seed: int = 7, missing_rate: float = 0.02) -> Feeder:
    """Split the data, train the model and prepare the rows, all from ``seed``."""
    populations = split_populations(seed)
    model, reference = train(populations)
    stream = RowStream(populations, np.random.default_rng(seed), missing_rate)

    return Feeder(model, reference, stream)


class MetricClient(Protocol):
    """The part of DogStatsd the feeder uses."""

    def timing(self, metric: str, value: float, tags: list[str] | None = None): ...
    def increment(self, metric: str, value: int = 1, tags: list[str] | None = None): ...
    def gauge(self, metric: str, value: float, tags: list[str] | None = None): ...


@dataclass(frozen=True)
class WindowReport:
    """What one window measured."""

    window: Window
    predictions: int
    errors: int
    psi: float | None
    p95_ms: float | None

    def line(self) -> str:
        """Return the one-line summary the feeder prints."""
        psi = "  -  " if self.psi is None else f"{self.psi:5.3f}"
        p95 = "-" if self.p95_ms is None else f"{self.p95_ms:.2f} ms"
        return (
            f"t={self.window.end:5.1f}s {self.window.phase:<9} "
            f"n={self.predictions:<4} errors={self.errors:<2} psi={psi} p95={p95}"
        )


def serve(
    feeder: Feeder,
    schedule: Schedule,
    rate: float,
    statsd: MetricClient,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    report: Callable[[WindowReport], None] = lambda _: None,
) -> list[WindowReport]:
    """Serve predictions at ``rate`` per second along ``schedule``.

    :param clock: monotonic seconds; tests pass a fake one with ``sleep``.
    :param report: called with each window's report as the window closes.
    """
    reports = []
    started = clock()
    served = 0
    for window in schedule.windows():
        scores, latencies, errors = [], [], 0
        # Due times come from a counter, not a running sum, so they never drift.
        while served / rate < window.end:
            sleep(max(0.0, served / rate - (clock() - started)))
            row = feeder.stream.next_row(window.phase)
            served += 1
            statsd.increment("model.predictions")
            begun = time.perf_counter()
            try:
                probabilities = feeder.model.predict_proba(row)
            except ValueError:
                # The model refuses a row with a missing value, as in production.
                errors += 1
                statsd.increment("model.errors", tags=["error:missing_value"])
                continue
            elapsed_ms = (time.perf_counter() - begun) * 1000.0
            statsd.timing("model.prediction.latency_ms", elapsed_ms)
            scores.append(probabilities[0, MALIGNANT])
            latencies.append(elapsed_ms)

        sleep(max(0.0, window.end - (clock() - started)))
        psi = feeder.reference.score(np.array(scores)) if scores else None
        if psi is not None:
            statsd.gauge("model.drift.psi", psi)
        p95 = float(np.percentile(latencies, 95)) if latencies else None
        window_report = WindowReport(window, len(scores) + errors, errors, psi, p95)
        reports.append(window_report)
        report(window_report)

    return reports


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True, help="Tocsin's unixgram socket")
    parser.add_argument("--model-name", default="tumour-screen-north")
    parser.add_argument("--project", default="tumour-screening")
    parser.add_argument("--duration", type=float, default=51.0, help="seconds")
    parser.add_argument("--drift-start", type=float, default=15.0, help="seconds")
    parser.add_argument(
        "--drift-end",
        type=float,
        default=30.0,
        help="seconds; equal to --drift-start for no drift",
    )
    parser.add_argument("--window", type=float, default=3.0, help="seconds per PSI")
    parser.add_argument("--rate", type=float, default=50.0, help="predictions/s")
    parser.add_argument("--missing-rate", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=7)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Train the model and serve it along the schedule given on the command line."""
    args = _parse_args(argv)
    schedule = Schedule(args.duration, args.drift_start, args.drift_end, args.window)
    feeder = build_feeder(args.seed, args.missing_rate)
    tags = [f"model:{args.model_name}", f"project:{args.project}", "env:demo"]
    # A blocking socket: when Tocsin falls behind, the feeder waits instead of
    # dropping datagrams, so every prediction is accounted for.
    statsd = DogStatsd(
        socket_path=args.socket,
        disable_telemetry=True,
        socket_timeout=None,
        constant_tags=tags,
    )
    drift = (
        f"drift from {args.drift_start:g}s to {args.drift_end:g}s"
        if schedule.drifts
        else "no drift"
    )
    print(
        f"serving {args.model_name}: {args.rate:g} predictions/s for "
        f"{args.duration:g}s, {drift}",
        flush=True,
    )
    try:
        serve(
            feeder,
            schedule,
            args.rate,
            statsd,
            report=lambda window: print(window.line(), flush=True),
        )
    finally:
        statsd.close_socket()


if __name__ == "__main__":
    main()
