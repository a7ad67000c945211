"""Evaluation: recall and false-positive rate of the volume anomaly detector on generated row counts.

    python benchmarks/anomaly_eval.py                      # 200 series x 182 days, seed 7
    python benchmarks/anomaly_eval.py --series 500 --seed 1 --sensitivity 3.5

Each series is a daily row count with a weekly profile (most series load less at the weekend), a
linear trend, multiplicative log-normal noise, and spikes/drops of known relative size injected at
known days. Every day from day ``--start`` on is tested walk-forward: the history is everything
before that day (earlier injected anomalies included, as in production). An injected day that is
flagged is a hit (recall); a clean day that is flagged is a false positive (FPR).

Compared in the same run, same training window, same detection-window exclusion and same threshold:
the robust detector without and with day-of-week seasonality, a plain mean/stddev z-score, and a
mean/stddev z-score per weekday (Elementary's ``seasonality: day_of_week``).
"""

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from healthmon_dagster.analytics.anomaly import (  # noqa: E402
    DEFAULT_TRAINING_DAYS,
    AnomalyStatus,
    detect_volume_anomaly,
)

# Relative size of an injected anomaly: -0.9 is a load with 10% of its usual rows, +2.0 triples it.
ANOMALY_SIZES = (-0.9, -0.6, -0.4, -0.25, 0.25, 0.4, 0.6, 1.0, 2.0)
FIRST_DAY = datetime(2025, 1, 6)  # a Monday


@dataclass
class Series:
    days: list[datetime]
    values: list[float]
    injected: dict[int, float]  # day index -> relative size
    weekly: bool  # True if the series loads less at the weekend


def generate_series(
    rng: np.random.Generator, n_days: int, start: int, anomalies: int = 6
) -> Series:
    """One daily row-count series with weekly seasonality, trend, noise and injected anomalies."""
    level = math.exp(rng.uniform(math.log(500), math.log(200_000)))
    profile = rng.uniform(0.9, 1.1, size=7)
    weekly = bool(rng.random() < 0.8)  # most sources load less at the weekend; some do not
    if weekly:
        profile[5:] = rng.uniform(0.2, 0.8, size=2)
    trend = rng.uniform(-0.001, 0.003)  # per day: -18% .. +55% over half a year
    noise = rng.uniform(0.02, 0.10)  # log-normal sigma

    days = [FIRST_DAY + timedelta(days=i) for i in range(n_days)]
    clean = [
        level * profile[d.weekday()] * (1 + trend * i) * math.exp(rng.normal(0, noise))
        for i, d in enumerate(days)
    ]
    # Anomalies at least 3 days apart, so each is judged against a history without its neighbour.
    candidates = list(range(start, n_days))
    injected: dict[int, float] = {}
    while len(injected) < anomalies and candidates:
        pos = int(rng.choice(candidates))
        injected[pos] = float(rng.choice(ANOMALY_SIZES))
        candidates = [c for c in candidates if abs(c - pos) >= 3]
    values = [
        float(round(v * (1 + injected[i]))) if i in injected else float(round(v))
        for i, v in enumerate(clean)
    ]
    return Series(days, values, injected, weekly)


def generate_dataset(seed: int, n_series: int, n_days: int = 182, start: int = 35) -> list[Series]:
    rng = np.random.default_rng(seed)
    return [generate_series(rng, n_days, start) for _ in range(n_series)]


# A detector takes (history, current) and returns True (anomaly), False (ok) or None (no verdict).
Detector = Callable[[list[tuple[datetime, float]], tuple[datetime, float]], bool | None]


def robust_detector(seasonality: bool, sensitivity: float, detection_window: int) -> Detector:
    def detect(
        history: list[tuple[datetime, float]], current: tuple[datetime, float]
    ) -> bool | None:
        result = detect_volume_anomaly(
            history,
            current,
            sensitivity=sensitivity,
            seasonality=seasonality,
            detection_window=detection_window,
        )
        if result.status == AnomalyStatus.INSUFFICIENT_HISTORY:
            return None
        return result.status == AnomalyStatus.ANOMALY

    return detect


def zscore_detector(seasonality: bool, sensitivity: float, detection_window: int) -> Detector:
    """Mean/stddev z-score on the same training data (per weekday if ``seasonality``)."""

    def detect(
        history: list[tuple[datetime, float]], current: tuple[datetime, float]
    ) -> bool | None:
        ts, value = current
        start = ts - timedelta(days=DEFAULT_TRAINING_DAYS)
        training = history[: len(history) - detection_window] if detection_window else history
        sample = [
            v
            for t, v in training
            if t >= start and (not seasonality or t.weekday() == ts.weekday())
        ]
        if len(sample) < (3 if seasonality else 7):
            return None
        sd = statistics.stdev(sample)
        if sd == 0:
            return value != sample[0]
        return abs(value - statistics.fmean(sample)) / sd > sensitivity

    return detect


@dataclass
class Tally:
    hits: int = 0
    misses: int = 0
    false_positives: int = 0
    true_negatives: int = 0
    no_verdict: int = 0
    by_size: dict[float, list[int]] = field(default_factory=dict)  # size -> [hits, total]

    @property
    def recall(self) -> float:
        return self.hits / max(1, self.hits + self.misses)

    @property
    def fpr(self) -> float:
        return self.false_positives / max(1, self.false_positives + self.true_negatives)


def evaluate(dataset: list[Series], detector: Detector, start: int = 35) -> Tally:
    """Walk-forward: every day from ``start`` is tested against all days before it."""
    tally = Tally()
    for series in dataset:
        points = list(zip(series.days, series.values, strict=True))
        for i in range(start, len(points)):
            flagged = detector(points[:i], points[i])
            size = series.injected.get(i)
            if flagged is None:
                tally.no_verdict += 1
                continue
            if size is None:
                if flagged:
                    tally.false_positives += 1
                else:
                    tally.true_negatives += 1
                continue
            if flagged:
                tally.hits += 1
            else:
                tally.misses += 1
            bucket = tally.by_size.setdefault(size, [0, 0])
            bucket[0] += int(flagged)
            bucket[1] += 1
    return tally


def merge(tallies: Iterable[Tally]) -> Tally:
    total = Tally()
    for t in tallies:
        total.hits += t.hits
        total.misses += t.misses
        total.false_positives += t.false_positives
        total.true_negatives += t.true_negatives
        total.no_verdict += t.no_verdict
        for size, (hits, n) in t.by_size.items():
            bucket = total.by_size.setdefault(size, [0, 0])
            bucket[0] += hits
            bucket[1] += n
    return total


def detectors(sensitivity: float, detection_window: int) -> dict[str, Detector]:
    return {
        "robust mad": robust_detector(False, sensitivity, detection_window),
        "robust mad_seasonal_dow": robust_detector(True, sensitivity, detection_window),
        "z-score mean/stddev": zscore_detector(False, sensitivity, detection_window),
        "z-score mean/stddev per weekday": zscore_detector(True, sensitivity, detection_window),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=200)
    parser.add_argument("--days", type=int, default=182)
    parser.add_argument("--start", type=int, default=35, help="first day tested (walk-forward)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--sensitivity", type=float, default=3.0)
    parser.add_argument("--detection-window", type=int, default=1)
    args = parser.parse_args(argv)

    dataset = generate_dataset(args.seed, args.series, args.days, args.start)
    n_injected = sum(len(s.injected) for s in dataset)
    n_tested = sum(len(s.values) - args.start for s in dataset)
    print(
        f"{args.series} series x {args.days} days (seed {args.seed}), {n_tested:,} days tested "
        f"from day {args.start}, {n_injected} injected anomalies; sensitivity "
        f"{args.sensitivity}, detection window {args.detection_window}, training "
        f"{DEFAULT_TRAINING_DAYS} days"
    )
    sizes = sorted(ANOMALY_SIZES)
    subsets = {
        "all": dataset,
        "weekly": [s for s in dataset if s.weekly],
        "flat week": [s for s in dataset if not s.weekly],
    }
    header = f"{'method':32} {'series':9} {'recall':>7} {'FPR':>7} {'FP':>5} {'no verdict':>10}  "
    print(header + " ".join(f"{s:+.0%}".rjust(5) for s in sizes) + "  seconds")
    for name, detector in detectors(args.sensitivity, args.detection_window).items():
        began = time.perf_counter()
        per_series = {id(s): evaluate([s], detector, args.start) for s in dataset}
        elapsed = time.perf_counter() - began
        for subset, members in subsets.items():
            tally = merge(per_series[id(s)] for s in members)
            per_size = " ".join(
                f"{tally.by_size[s][0] / tally.by_size[s][1]:5.0%}"
                if s in tally.by_size
                else "    -"
                for s in sizes
            )
            seconds = f"{elapsed:.1f}" if subset == "all" else ""
            print(
                f"{name:32} {subset:9} {tally.recall:7.1%} {tally.fpr:7.2%} "
                f"{tally.false_positives:5d} {tally.no_verdict:10d}  {per_size}  {seconds}"
            )
    print("per-size columns: recall for injected anomalies of that relative size;")
    print("'weekly': series with a weekend dip, 'flat week': series without one")


if __name__ == "__main__":
    main()
