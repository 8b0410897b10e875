"""Sorted-array window kernels: per-group counts and look-ups of events strictly before a time.

Every point-in-time window here has the form "events of the same group (service, author, ...)
with time in ``[t - w, t)``". Events are sorted once on one int64 key ``group * span + time``,
so a single ``np.searchsorted`` answers a whole column of queries for every group at once: no
Python loop over groups (there can be thousands) and none over queries (there can be millions).

Times are int64 microseconds since the epoch (UTC). ``OPEN_END`` marks an interval that has not
ended yet. All functions are pure: inputs are never modified.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

#: End of an interval that is still open ("true until further notice").
OPEN_END = int(np.iinfo(np.int64).max)
#: Combined keys stay below this, leaving headroom for the arithmetic on them.
_KEY_LIMIT = 2**62
#: From this many queries, ``EventStreams`` searches row by row (cache) rather than in one call (overhead).
_ROW_BY_ROW = 256


def _distinct_sorted(values: IntArray) -> IntArray:
    """Sorted distinct values (a plain sort: faster than ``np.unique`` for int64 here)."""
    ordered = np.sort(values)
    if len(ordered) < 2:
        return ordered
    keep = np.empty(len(ordered), dtype=bool)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


@dataclass(frozen=True)
class TimeAxis:
    """An order-preserving int64 code for times, shared by stored values and queries.

    ``value < query`` holds exactly when ``code_values(value) < code_queries(query)``, and every
    code lies in ``[0, span)``. The cheap form subtracts the earliest time (queries clipped to the
    range, which keeps every comparison); when ``groups * span`` would overflow int64 (thousands
    of groups over centuries of microseconds) the codes are ranks among the distinct values.
    """

    lo: int
    span: int
    uniques: IntArray | None = None

    @classmethod
    def fit(cls, values: IntArray, n_groups: int, *, force_ranks: bool = False) -> TimeAxis:
        finite = values[values != OPEN_END]
        lo = int(finite.min()) if len(finite) else 0
        hi = int(finite.max()) if len(finite) else 0
        span = hi - lo + 2  # codes 0 .. hi-lo for values, hi-lo+1 for OPEN_END and late queries
        if force_ranks or max(n_groups, 1) * span >= _KEY_LIMIT:
            uniques = _distinct_sorted(values)
            return cls(lo=0, span=len(uniques) + 1, uniques=uniques)
        return cls(lo=lo, span=span)

    def code_values(self, values: IntArray) -> IntArray:
        if self.uniques is not None:
            return np.searchsorted(self.uniques, values).astype(np.int64)
        out = values - self.lo
        out[values == OPEN_END] = self.span - 1
        return out

    def code_queries(self, queries: IntArray) -> IntArray:
        if self.uniques is not None:
            return np.searchsorted(self.uniques, queries, side="left").astype(np.int64)
        # min/max rather than np.clip: same values, without clip's per-call overhead (one-row queries)
        return np.minimum(np.maximum(queries, self.lo), self.lo + self.span - 1) - self.lo

    def decode(self, codes: IntArray) -> IntArray:
        """The stored values behind value codes (used for look-ups of the last event)."""
        if self.uniques is not None:
            return self.uniques[codes]
        out = codes + self.lo
        out[codes == self.span - 1] = OPEN_END
        return out


@dataclass(frozen=True)
class SortedEvents:
    """Event times sorted by (group, time) as combined keys ``group * span + code(time)``."""

    keys: IntArray
    axis: TimeAxis
    n_groups: int
    group_start: IntArray  # position of each group's first key (length n_groups)

    @property
    def size(self) -> int:
        return len(self.keys)


def _check(groups: IntArray, times: IntArray) -> tuple[IntArray, IntArray]:
    groups = np.asarray(groups, dtype=np.int64)
    times = np.asarray(times, dtype=np.int64)
    if groups.shape != times.shape:
        raise ValueError("groups and times must have the same length")
    return groups, times


def _check_queries(groups: IntArray, times: IntArray) -> tuple[IntArray, IntArray]:
    """Query groups and times that broadcast together, e.g. times ``(k, n)`` for k windows of n queries.

    Stacking the windows of one index into one call matters for a single query (a scoring request),
    where numpy's per-call overhead, not the search, is the cost.
    """
    groups = np.asarray(groups, dtype=np.int64)
    times = np.asarray(times, dtype=np.int64)
    if groups.ndim == times.ndim and groups.shape != times.shape:
        raise ValueError("groups and times must have the same length")
    return groups, times


def sort_events(groups: IntArray, times: IntArray, *, force_ranks: bool = False) -> SortedEvents:
    """Index events for window queries; groups are codes >= 0 (drop unknown groups first)."""
    groups, times = _check(groups, times)
    if len(groups) and groups.min() < 0:
        raise ValueError("event groups must be >= 0; drop events without a group before indexing")
    n_groups = int(groups.max()) + 1 if len(groups) else 0
    axis = TimeAxis.fit(times, n_groups, force_ranks=force_ranks)
    keys = np.sort(groups * axis.span + axis.code_values(times))
    group_start = np.searchsorted(keys, np.arange(n_groups, dtype=np.int64) * axis.span, side="left")
    return SortedEvents(keys=keys, axis=axis, n_groups=n_groups, group_start=group_start.astype(np.int64))


def _query_keys(
    events: SortedEvents, groups: IntArray, times: IntArray
) -> tuple[IntArray, BoolArray, IntArray, IntArray]:
    """Combined query keys, known mask, group key offset and group start position.

    Queries of groups without events get a harmless key and known=False.
    """
    known = (groups >= 0) & (groups < events.n_groups)
    safe = np.where(known, groups, 0)
    base = safe * events.axis.span
    start = events.group_start[safe] if events.n_groups else np.zeros(groups.shape, dtype=np.int64)
    return base + events.axis.code_queries(times), known, base, start


def count_before(events: SortedEvents, groups: IntArray, times: IntArray) -> IntArray:
    """Number of events of the same group with time strictly before each query time."""
    groups, times = _check_queries(groups, times)
    keys, known, _, start = _query_keys(events, groups, times)
    pos = np.searchsorted(events.keys, keys, side="left")
    return np.where(known, pos - start, 0).astype(np.int64)


def count_window(events: SortedEvents, groups: IntArray, times: IntArray, width: int) -> IntArray:
    """Number of events of the same group with time in ``[t - width, t)``."""
    groups, times = _check_queries(groups, times)
    hi_keys, known, base, _ = _query_keys(events, groups, times)
    lo_keys = base + events.axis.code_queries(times - np.int64(width))
    counts = np.searchsorted(events.keys, hi_keys, side="left") - np.searchsorted(events.keys, lo_keys, side="left")
    return np.where(known, counts, 0).astype(np.int64)


def last_before(events: SortedEvents, groups: IntArray, times: IntArray) -> tuple[IntArray, BoolArray]:
    """Time of the latest event of the same group strictly before each query, and whether one exists."""
    groups, times = _check_queries(groups, times)
    keys, known, base, start = _query_keys(events, groups, times)
    pos = np.searchsorted(events.keys, keys, side="left")
    found = known & (pos > start)
    if not events.size:
        return np.zeros(keys.shape, dtype=np.int64), found
    codes = np.where(found, events.keys[np.maximum(pos - 1, 0)] - base, 0)
    return np.where(found, events.axis.decode(codes), 0).astype(np.int64), found


@dataclass(frozen=True)
class SortedIntervals:
    """Half-open intervals ``(start, end]`` per group, indexed for "how many contain t" queries.

    ``(start, end]`` is the natural shape under strict point-in-time semantics: a state set by an
    event at ``start`` is visible to queries after ``start``, and an event at ``end`` that changes
    it is not yet visible to a query at exactly ``end``.
    """

    starts: SortedEvents
    ends: SortedEvents
    # For min-start queries: start keys sorted by (group, start), and the running max of the end
    # keys in that order (one shared axis for both).
    by_start: IntArray
    max_end: IntArray
    axis: TimeAxis
    n_groups: int


def nonempty_intervals(groups: IntArray, starts: IntArray, ends: IntArray) -> tuple[IntArray, IntArray, IntArray]:
    """The intervals ``(start, end]`` that can contain a time (start < end); the others never count."""
    groups, starts = _check(groups, starts)
    ends = np.asarray(ends, dtype=np.int64)
    keep = starts < ends
    return groups[keep], starts[keep], ends[keep]


def sort_intervals(groups: IntArray, starts: IntArray, ends: IntArray, *, force_ranks: bool = False) -> SortedIntervals:
    """Index intervals ``(start, end]``; empty ones (start >= end) are dropped."""
    groups, starts, ends = nonempty_intervals(groups, starts, ends)
    n_groups = int(groups.max()) + 1 if len(groups) else 0
    axis = TimeAxis.fit(np.concatenate([starts, ends]), n_groups, force_ranks=force_ranks)
    start_keys = groups * axis.span + axis.code_values(starts)
    end_keys = groups * axis.span + axis.code_values(ends)
    order = np.argsort(start_keys)
    return SortedIntervals(
        starts=sort_events(groups, starts, force_ranks=force_ranks),
        ends=sort_events(groups, ends, force_ranks=force_ranks),
        by_start=start_keys[order],
        max_end=np.maximum.accumulate(end_keys[order]) if len(order) else end_keys,
        axis=axis,
        n_groups=n_groups,
    )


def count_covering(intervals: SortedIntervals, groups: IntArray, times: IntArray) -> IntArray:
    """Number of intervals of the same group with ``start < t <= end``: starts before t minus ends before t."""
    return count_before(intervals.starts, groups, times) - count_before(intervals.ends, groups, times)


def min_start_covering(intervals: SortedIntervals, groups: IntArray, times: IntArray) -> tuple[IntArray, BoolArray]:
    """Earliest start among the intervals of the same group containing t, and whether any does.

    Sorted by (group, start), the first interval whose end reaches t is also the first place where
    the running maximum of ends reaches t; the running maximum is monotone (group offsets keep
    groups apart), so one searchsorted finds it. It qualifies if its start is before t.
    """
    groups, times = _check_queries(groups, times)
    known = (groups >= 0) & (groups < intervals.n_groups)
    keys = np.where(known, groups, 0) * intervals.axis.span + intervals.axis.code_queries(times)
    n_started = np.searchsorted(intervals.by_start, keys, side="left")
    first_open = np.searchsorted(intervals.max_end, keys, side="left")
    found = known & (first_open < n_started)
    if not len(intervals.by_start):
        return np.zeros(keys.shape, dtype=np.int64), found
    pick = intervals.by_start[np.minimum(first_open, len(intervals.by_start) - 1)]
    codes = np.where(found, pick - np.where(known, groups, 0) * intervals.axis.span, 0)
    start = intervals.axis.decode(codes)
    return np.where(found, start, 0).astype(np.int64), found


def group_time_order(groups: IntArray, times: IntArray, tie: npt.NDArray[np.integer] | None = None) -> IntArray:
    """Permutation sorting rows by (group, time[, tie]) with one argsort of a combined int64 key.

    When ``groups * time span`` would overflow, times are first replaced by their dense ranks
    (one more sort), which is still cheaper than a multi-key stable ``np.lexsort``.
    """
    groups, times = _check(groups, times)
    if len(groups) <= 1:  # a single query (one scoring request) needs no sort
        return np.zeros(len(groups), dtype=np.int64)
    tie_codes = np.zeros(len(groups), dtype=np.int64) if tie is None else np.asarray(tie, dtype=np.int64)
    if int(tie_codes.min()) < 0:
        raise ValueError("tie codes must be >= 0")
    groups = groups - int(groups.min())  # e.g. -1 for "no group" sorts first
    n_groups, tie_span = int(groups.max()) + 1, int(tie_codes.max()) + 1
    t_lo = int(times.min())
    span = int(times.max()) - t_lo + 1
    if n_groups * span * tie_span < _KEY_LIMIT:
        rel = times - t_lo
    else:
        by_time = np.argsort(times)
        ordered = times[by_time]
        step = np.zeros(len(ordered), dtype=np.int64)
        step[1:] = ordered[1:] != ordered[:-1]
        rel = np.empty(len(times), dtype=np.int64)
        rel[by_time] = np.cumsum(step)
        span = int(rel.max()) + 1
        if n_groups * span * tie_span >= _KEY_LIMIT:
            return np.lexsort((tie_codes, times, groups)).astype(np.int64)
    return np.argsort((groups * span + rel) * tie_span + tie_codes).astype(np.int64)


def previous_in_group(groups: IntArray, times: IntArray) -> tuple[IntArray, BoolArray]:
    """For each event, the time of the previous event of the same group (ties: the equal time)."""
    groups, times = _check(groups, times)
    order = group_time_order(groups, times)
    g, t = groups[order], times[order]
    has_prev = np.zeros(len(g), dtype=bool)
    has_prev[1:] = g[1:] == g[:-1]
    prev_sorted = np.zeros(len(g), dtype=np.int64)
    prev_sorted[1:] = t[:-1]
    prev = np.empty_like(prev_sorted)
    found = np.empty_like(has_prev)
    prev[order] = np.where(has_prev, prev_sorted, 0)
    found[order] = has_prev
    return prev, found


@dataclass(frozen=True)
class Queries:
    """Query points pre-sorted by (group, time), and the way back to their original order.

    ``np.searchsorted`` is an order of magnitude faster on sorted needles (each search starts
    where the previous ended, in cache), so a column of queries is sorted once and reused for
    every window of the same grouping.
    """

    groups: IntArray
    times: IntArray
    order: IntArray

    @classmethod
    def of(cls, groups: IntArray, times: IntArray) -> Queries:
        groups, times = _check(groups, times)
        if len(groups) <= 1:  # one query (a scoring request) is sorted already
            return cls(groups=groups, times=times, order=np.zeros(len(groups), dtype=np.int64))
        order = group_time_order(groups, times)
        return cls(groups=groups[order], times=times[order], order=order)

    def restore(self, columns: Mapping[str, npt.ArrayLike]) -> dict[str, npt.NDArray[np.float64]]:
        """Columns computed for the sorted queries, put back in the original query order (as float64)."""
        if len(self.order) <= 1:  # nothing to reorder (one scoring request): skip the scatter
            return {name: np.asarray(values, dtype=np.float64) for name, values in columns.items()}
        out: dict[str, npt.NDArray[np.float64]] = {}
        for name, values in columns.items():
            column = np.empty(len(self.order), dtype=np.float64)
            column[self.order] = values
            out[name] = column
        return out


@dataclass(frozen=True)
class EventStreams:
    """Several event streams over one grouping (say a service's deploys, incidents and flips) in one index.

    Stream k's group g is event group ``k * n_groups + g``, so every stream and window a query needs is
    answered by one search: for a single query (a scoring request) numpy's per-call cost, not the
    search, is what each window would otherwise cost.
    """

    events: SortedEvents
    names: tuple[str, ...]
    n_groups: int
    bounds: IntArray  # stream k's keys are events.keys[bounds[k]:bounds[k + 1]]

    @classmethod
    def of(cls, n_groups: int, streams: Mapping[str, tuple[IntArray, IntArray]]) -> EventStreams:
        """Index named streams of (groups, times); groups are codes in ``[0, n_groups)``."""
        parts = [_check(g, t) for g, t in streams.values()]
        if any(len(g) and (g.min() < 0 or g.max() >= n_groups) for g, _ in parts):
            raise ValueError("stream groups must be in [0, n_groups); drop events without a group first")
        empty = np.zeros(0, dtype=np.int64)
        total_groups = len(parts) * n_groups
        axis = TimeAxis.fit(np.concatenate([empty, *(t for _, t in parts)]), total_groups)
        # Stream k's keys all lie below stream k + 1's, so sorting stream by stream sorts them all (cheaper).
        keys = np.concatenate(
            [empty, *(np.sort((k * n_groups + g) * axis.span + axis.code_values(t)) for k, (g, t) in enumerate(parts))]
        )
        group_start = np.searchsorted(keys, np.arange(total_groups, dtype=np.int64) * axis.span, side="left")
        events = SortedEvents(keys=keys, axis=axis, n_groups=total_groups, group_start=group_start.astype(np.int64))
        bounds = np.cumsum([0, *(len(g) for g, _ in parts)], dtype=np.int64)
        return cls(events=events, names=tuple(streams), n_groups=n_groups, bounds=bounds)

    def windows(self, windows: Sequence[tuple[str, int]]) -> StreamWindows:
        """A fixed list of (stream, lag) searches, as arrays built once rather than per query."""
        stream = np.array([self.names.index(name) for name, _ in windows], dtype=np.int64)[:, None]
        lags = np.array([lag for _, lag in windows], dtype=np.int64)[:, None]
        return StreamWindows(tuple(windows), stream * self.n_groups, lags, tuple(int(k) for k in stream[:, 0]))

    def count_before(self, windows: StreamWindows, groups: IntArray, times: IntArray) -> IntArray:
        """Row i: events of stream ``windows[i][0]`` in each query's group strictly before
        ``t - windows[i][1]`` (so [t - w, t) is the row of lag 0 minus the row of lag w).

        A few queries (a request) take one search for every row; many (a training table) search row by
        row within the row's stream, keeping both the search in cache and the temporaries one row wide.
        """
        groups, times = _check(groups, times)
        if len(groups) < _ROW_BY_ROW:
            return count_before(self.events, self._groups(windows, groups), times - windows.lags)
        # count_before's steps, with the group part done once per stream and the search kept to its slice
        events, axis = self.events, self.events.axis
        known = (groups >= 0) & (groups < self.n_groups)
        safe = np.where(known, groups, 0)
        out = np.empty((len(windows.streams), len(groups)), dtype=np.int64)
        by_stream: dict[int, tuple[IntArray, IntArray]] = {}
        for i, (k, lag) in enumerate(zip(windows.streams, windows.lags[:, 0].tolist(), strict=True)):
            if k not in by_stream:
                group = safe + k * self.n_groups
                by_stream[k] = (group * axis.span, events.group_start[group] if events.n_groups else safe * 0)
            base, start = by_stream[k]
            lo, hi = int(self.bounds[k]), int(self.bounds[k + 1])
            pos = lo + np.searchsorted(events.keys[lo:hi], base + axis.code_queries(times - lag), side="left")
            out[i] = np.where(known, pos - start, 0)
        return out

    def last_before(self, windows: StreamWindows, groups: IntArray, times: IntArray) -> tuple[IntArray, BoolArray]:
        """Row i: time of the latest event of stream ``windows[i][0]`` in each query's group strictly
        before ``t - windows[i][1]``, and whether there is one."""
        return last_before(self.events, self._groups(windows, groups), times - windows.lags)

    def _groups(self, windows: StreamWindows, groups: IntArray) -> IntArray:
        groups = np.asarray(groups, dtype=np.int64)
        return np.where((groups >= 0) & (groups < self.n_groups), windows.offsets + groups, -1)


@dataclass(frozen=True)
class StreamWindows:
    """(stream, lag) searches against one ``EventStreams``: the streams' group offsets and the lags, as columns."""

    windows: tuple[tuple[str, int], ...]
    offsets: IntArray  # group offset of each window's stream, as a column
    lags: IntArray  # as a column
    streams: tuple[int, ...]  # stream of each window
