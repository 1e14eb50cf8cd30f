"""Shorter step-function timelines for written results: resampled to equal time buckets.

A 1,024-GPU step records about 1.8 million link-rate changes; written out in full they make a
68 MB `result.json` nobody reads point by point. `SimulationResult.to_json` therefore resamples
a timeline longer than its limit into that many equal buckets of the step:

- a link's rate by its **mean** over each bucket, so the bytes each bucket carries (the area
  under the curve) stay what they were and utilization plots keep their meaning;
- a rank's memory by its **maximum** over each bucket, so the peak stays visible.

A timeline is a list of (time_s, value) changes: the value holds from its time until the next
change, the last one until the end of the step, and 0 before the first change. Consecutive
buckets with equal values are merged, as in the engine's own timelines.

    resample_mean([(0.0, 10.0), (1.0, 0.0), (3.0, 4.0)], end_s=4.0, num_points=2)
    # -> [(0.0, 5.0), (2.0, 2.0)]: 10 B/s for 1 s of bucket [0, 2), 4 B/s for 1 s of [2, 4)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

__all__ = ["resample_mean", "resample_max"]


def _segments(timeline: Sequence[tuple[float, float]], end_s: float, num_points: int
              ) -> Iterator[tuple[int, float, float]]:
    """(bucket index, overlap seconds, value) of every piece of the step function that falls
    in a bucket; a piece of zero length (a change at the very end) counts with 0 seconds."""
    width = end_s / num_points
    last = num_points - 1
    for j, (start, value) in enumerate(timeline):
        stop = timeline[j + 1][0] if j + 1 < len(timeline) else end_s
        stop = min(stop, end_s)
        k = min(int(start / width), last)
        lo = start
        while True:
            hi = stop if k == last else min(stop, (k + 1) * width)
            yield k, max(hi - lo, 0.0), value
            if hi >= stop:
                break
            lo, k = max(lo, hi), k + 1


def _merged(values: list[float], end_s: float) -> list[tuple[float, float]]:
    width = end_s / len(values)
    out: list[tuple[float, float]] = []
    for k, value in enumerate(values):
        if not out or out[-1][1] != value:
            out.append((k * width, value))
    return out


def resample_mean(timeline: Sequence[tuple[float, float]], end_s: float,
                  num_points: int) -> list[tuple[float, float]]:
    """At most `num_points` (bucket start, mean value over the bucket) of a timeline on
    [0, end_s]: the integral over each bucket is kept. Shorter timelines come back as they
    are."""
    if len(timeline) <= num_points or not end_s > 0:
        return list(timeline)
    area = [0.0] * num_points
    for k, seconds, value in _segments(timeline, end_s, num_points):
        area[k] += value * seconds
    width = end_s / num_points
    return _merged([a / width for a in area], end_s)


def resample_max(timeline: Sequence[tuple[float, int]], end_s: float,
                 num_points: int) -> list[tuple[float, int]]:
    """At most `num_points` (bucket start, highest value in the bucket) of a timeline on
    [0, end_s]: the peak is kept. Shorter timelines come back as they are."""
    if len(timeline) <= num_points or not end_s > 0:
        return list(timeline)
    top: list[int | None] = [None] * num_points
    for k, _seconds, value in _segments(timeline, end_s, num_points):
        if top[k] is None or value > top[k]:  # type: ignore[operator]
            top[k] = value
    # only buckets before the first change are never reached: the value there is 0
    return _merged([0 if value is None else value for value in top], end_s)  # type: ignore[misc]
