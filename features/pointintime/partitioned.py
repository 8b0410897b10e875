"""Point-in-time features for histories beyond one machine's memory: per-service Parquet partitions.

``features.pointintime.compute.build_features`` holds the whole history in memory. Most of its features
look only at the deploy's own service (its deploys, incidents, toggles, the author's deploys to
that service, the service's matured labels), so they can be built one service partition at a time.
Five columns look across services:

- ``author_prior_deploys``, ``author_deploys_7d``: the author's deploys to every service;
- ``author_matured_labels``, ``author_failure_rate``: the matured labels of those deploys;
- ``service_failure_rate`` (and ``author_failure_rate``): shrunk towards the failure rate of every
  matured label in the organisation as of the deploy ("the prior").

The partitioned path runs in three passes, each holding one partition (or one bucket) in memory:

1. ``partition_history`` / ``partition_store``: the canonical tables and the deploy labels,
   split by service into Hive-style Parquet partitions (``<root>/<table>/service=<name>/``).
2. ``author_pass``: per service partition, emit compact author events (author, time), label
   events (author, usable-from time, failed) and entities; regroup them by a hash of the author
   into buckets, and per bucket compute the author columns with the same window kernels
   (``features.pointintime.windows``) and the definitions of ``features.pointintime.compute`` itself:
   ``counted_deploys`` (which deploys count), ``usable_labels`` (when a label may be used),
   ``author_activity`` (its window), ``failure_prior`` and ``smoothed_rate``; nothing is re-derived
   here. The prior needs one organisation-wide timeline of matured labels: 9 bytes per label (time,
   failed), held once.
3. ``build_partitioned``: per service partition, ``build_features`` on that partition's history,
   then the cross-service columns replaced by the author pass's values (``service_failure_rate``
   recomputed from the partition's own label counts and the global prior).

The result equals the monolithic build exactly (tests/features/pointintime/test_partitioned.py).
The training flow does not use this path (docs/architecture.md says why); it is the scale-out route
for a history that outgrows one machine's memory.
"""

from __future__ import annotations

import shutil
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from features.history.ownership import apply_ownership
from features.history.schema import TABLES, History
from features.history.store import HistoryStore, coerce_table
from features.history.timestamps import utc_micros_column
from features.pointintime.compute import (
    AUTHOR_RECENT_WINDOW,
    FeatureConfig,
    author_activity,
    build_features,
    counted_deploys,
    failure_prior,
    smoothed_rate,
    usable_labels,
)
from features.pointintime.windows import Queries, count_before, sort_events

TABLE_NAMES = ("deploys", "toggle_events", "incidents")
LABELS = "deploy_labels"
#: The store's catalog, copied whole beside the partitions (small): deploys get its ownership on read.
CATALOG_FILE = "catalog.parquet"
LABEL_COLUMNS = ("deploy_id", "failed", "matured_at")
#: Directory name of the partition of rows without a service (pyarrow's Hive default).
NO_SERVICE = "__HIVE_DEFAULT_PARTITION__"
CROSS_SERVICE_COLUMNS = (
    "author_prior_deploys",
    "author_deploys_7d",
    "author_matured_labels",
    "author_failure_rate",
    "service_failure_rate",
)
EntityFilter = Callable[[pd.DataFrame], pd.Series]


@dataclass(frozen=True)
class Partitions:
    """Where a partitioned history lives and which service partitions it has (None: no service)."""

    root: Path
    services: tuple[str | None, ...]

    def table_dir(self, table: str) -> Path:
        return self.root / table


def _partitioning() -> ds.Partitioning:
    return ds.partitioning(pa.schema([("service", pa.string())]), flavor="hive")


def _write(data: pa.Table | ds.Dataset, directory: Path) -> None:
    """Stream rows into one Parquet partition per service (pyarrow bounds memory and open files)."""
    ds.write_dataset(
        data,
        directory,
        format="parquet",
        partitioning=_partitioning(),
        existing_data_behavior="delete_matching",
        basename_template="part-{i}.parquet",
    )


def _labels_with_service(labels: pd.DataFrame, deploys: pd.DataFrame) -> pd.DataFrame:
    """Labels keyed to their deploy's service, so they land in that deploy's partition."""
    missing = [c for c in LABEL_COLUMNS if c not in labels.columns]
    if missing:
        raise ValueError(f"deploy labels lack columns {missing}")
    services = deploys[["deploy_id", "service"]].drop_duplicates("deploy_id")
    out = labels[list(LABEL_COLUMNS)].merge(services, on="deploy_id", how="inner", validate="many_to_one")
    out["failed"] = out["failed"].astype("boolean")
    out["matured_at"] = pd.to_datetime(out["matured_at"], utc=True)
    return out


def _discover(root: Path) -> tuple[str | None, ...]:
    found: set[str | None] = set()
    for table in (*TABLE_NAMES, LABELS):
        folder = root / table
        if not folder.is_dir():
            continue
        for child in folder.iterdir():
            if child.is_dir() and child.name.startswith("service="):
                value = urllib.parse.unquote(child.name.removeprefix("service="))
                found.add(None if value == NO_SERVICE else value)
    return tuple(sorted(found, key=lambda s: (s is None, s or "")))


def partition_history(history: History, deploy_labels: pd.DataFrame, root: Path) -> Partitions:
    """Split an in-memory history and its deploy labels into per-service partitions under ``root``."""
    if root.exists():
        shutil.rmtree(root)
    for name in TABLE_NAMES:
        frame = getattr(history, name)
        _write(pa.Table.from_pandas(frame, preserve_index=False), root / name)
    labels = _labels_with_service(deploy_labels, history.deploys)
    _write(pa.Table.from_pandas(labels, preserve_index=False), root / LABELS)
    return Partitions(root, _discover(root))


def partition_store(store_dir: Path, deploy_labels: pd.DataFrame, root: Path) -> Partitions:
    """Split the committed store (one manifest version) into partitions, streaming its Parquet files.

    The table files are scanned in record batches, never loaded whole; the labels (one row per
    deploy, three columns) are joined to the deploys' services, which are read as two columns.
    """
    store = HistoryStore(store_dir)
    manifest = store.manifest()
    if root.exists():
        shutil.rmtree(root)
    for name in TABLE_NAMES:
        rel = manifest.files.get(name)
        if rel is None:
            _write(pa.Table.from_pandas(store.read(name, manifest), preserve_index=False), root / name)
        else:
            _write(ds.dataset(store_dir / rel, format="parquet"), root / name)
    rel = manifest.files.get("deploys")
    services = (
        pq.read_table(store_dir / rel, columns=["deploy_id", "service"]).to_pandas()
        if rel
        else pd.DataFrame({"deploy_id": pd.Series(dtype="string"), "service": pd.Series(dtype="string")})
    )
    _write(pa.Table.from_pandas(_labels_with_service(deploy_labels, services), preserve_index=False), root / LABELS)
    if manifest.files.get("catalog"):
        store.read("catalog", manifest).to_parquet(root / CATALOG_FILE, index=False)
    return Partitions(root, _discover(root))


def _filter(service: str | None) -> ds.Expression:
    return ds.field("service").is_null() if service is None else ds.field("service") == service


def read_partition(parts: Partitions, table: str, service: str | None) -> pd.DataFrame:
    """One service's rows of a table (or of the labels), in canonical dtypes."""
    folder = parts.table_dir(table)
    if not folder.is_dir():
        frame = pd.DataFrame()
    else:
        data = ds.dataset(folder, format="parquet", partitioning=_partitioning())
        frame = data.to_table(filter=_filter(service)).to_pandas()
    frame = frame.drop(columns=["service"], errors="ignore")
    frame["service"] = pd.Series(service, index=frame.index, dtype="string")
    if table == LABELS:
        for column in LABEL_COLUMNS:
            if column not in frame.columns:
                frame[column] = pd.Series(dtype="object")
        return frame.reset_index(drop=True)
    return coerce_table(TABLES[table], frame)


def read_partition_history(parts: Partitions, service: str | None) -> tuple[History, pd.DataFrame]:
    """One service partition's history and deploy labels."""
    catalog_file = parts.root / CATALOG_FILE
    deploys = read_partition(parts, "deploys", service)
    if catalog_file.exists():  # the store's deploys were streamed raw: apply ownership as read_history does
        deploys = apply_ownership(deploys, coerce_table(TABLES["catalog"], pd.read_parquet(catalog_file)))
    history = History(
        deploys=deploys,
        toggle_events=read_partition(parts, "toggle_events", service),
        incidents=read_partition(parts, "incidents", service),
    )
    return history, read_partition(parts, LABELS, service)


# --------------------------------------------------------------------------------------------
# Pass 2: cross-service (author and organisation-wide) aggregates


def _bucket(authors: pd.Series, buckets: int) -> np.ndarray:
    """A stable bucket per author string (missing authors -> bucket 0: they never match anyone)."""
    text = authors.astype("string")
    out = np.zeros(len(text), dtype=np.int64)
    known = text.notna().to_numpy()
    if known.any():
        hashed = pd.util.hash_array(text[known].astype(str).to_numpy(dtype=object))
        out[known] = (hashed % np.uint64(buckets)).astype(np.int64)
    return out


def _partition_events(
    history: History, labels: pd.DataFrame, config: FeatureConfig, select: EntityFilter | None
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(author events, label events, entities) of one partition, as the monolithic build counts them.

    A deploy counts in history windows when it is in ``history_environments`` with a service and a
    time; a label is usable from max(matured_at, created_at) when its deploy counts.
    """
    dep = history.deploys
    counted, t = counted_deploys(dep, config)
    author = dep["author"].astype("string")
    events = pd.DataFrame({"author": author[counted].to_numpy(), "t": t[counted]})
    events = events[events["author"].notna()]

    dep_author = author[counted].to_numpy()
    row, label_t, failed = usable_labels(labels, dep["deploy_id"].astype("string")[counted], t[counted])
    label_events = pd.DataFrame(
        {"author": pd.array(dep_author[row], dtype="string"), "t": label_t, "failed": failed.astype(bool)}
    )
    chosen = dep if select is None else dep[select(dep).fillna(False).to_numpy(dtype=bool)]
    if chosen["created_at"].isna().any():
        raise ValueError("entities need a created_at")
    entities = pd.DataFrame(
        {
            "deploy_id": chosen["deploy_id"].astype("string").to_numpy(),
            "author": chosen["author"].astype("string").to_numpy(),
            "t": utc_micros_column(chosen["created_at"], "deploys.created_at")[0],
        }
    )
    return events, label_events, entities


def _key(service: str | None) -> str:
    return "service=" + (NO_SERVICE if service is None else urllib.parse.quote(service, safe=""))


def _append_buckets(frame: pd.DataFrame, directory: Path, buckets: int, stem: str) -> None:
    if frame.empty:
        return
    which = _bucket(frame["author"], buckets)
    for b in np.unique(which):
        folder = directory / f"bucket={b}"
        folder.mkdir(parents=True, exist_ok=True)
        frame[which == b].to_parquet(folder / f"{stem}.parquet", index=False)


def _read_bucket(directory: Path, b: int, columns: dict[str, str]) -> pd.DataFrame:
    files = sorted((directory / f"bucket={b}").glob("*.parquet"))
    if not files:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in columns.items()})
    frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    return frame.astype(columns)


def _counts(groups: np.ndarray, times: np.ndarray, failed: np.ndarray, q: Queries) -> tuple[np.ndarray, np.ndarray]:
    """(matured labels, failed labels) strictly before each query, per group (as the monolithic build)."""
    has = groups >= 0
    total = count_before(sort_events(groups[has], times[has]), q.groups, q.times)
    fails = count_before(sort_events(groups[has & failed], times[has & failed]), q.groups, q.times)
    out = q.restore({"total": total, "fails": fails})
    return out["total"], out["fails"]


def author_pass(
    parts: Partitions, work: Path, config: FeatureConfig, buckets: int = 16, select: EntityFilter | None = None
) -> Path:
    """Cross-service aggregates of every entity, written per service under ``work/aggregates``.

    Holds one partition, then one author bucket, then the organisation-wide label timeline (two
    numbers per matured label) in memory at a time.
    """
    if buckets < 1:
        raise ValueError("buckets must be at least 1")
    if work.exists():
        shutil.rmtree(work)
    events_dir, labels_dir, entities_dir, timeline_dir = (
        work / n for n in ("events", "labels", "entities", "timeline")
    )
    timeline_dir.mkdir(parents=True)
    for i, service in enumerate(parts.services):
        history, labels = read_partition_history(parts, service)
        events, label_events, entities = _partition_events(history, labels, config, select)
        _append_buckets(events, events_dir, buckets, f"p{i}")
        _append_buckets(label_events, labels_dir, buckets, f"p{i}")
        _append_buckets(entities.assign(partition=_key(service)), entities_dir, buckets, f"p{i}")
        label_events[["t", "failed"]].to_parquet(timeline_dir / f"p{i}.parquet", index=False)

    timeline = pd.concat([pd.read_parquet(f) for f in sorted(timeline_dir.glob("*.parquet"))], ignore_index=True)
    all_t = timeline["t"].to_numpy(dtype=np.int64)
    all_failed = timeline["failed"].to_numpy(dtype=bool)
    zeros = np.zeros(len(all_t), dtype=np.int64)
    out_dir = work / "aggregates"
    w = config.smoothing_prior_weight
    for b in range(buckets):
        ent = _read_bucket(
            entities_dir, b, {"deploy_id": "string", "author": "string", "t": "int64", "partition": "string"}
        )
        if ent.empty:
            continue
        ev = _read_bucket(events_dir, b, {"author": "string", "t": "int64"})
        lab = _read_bucket(labels_dir, b, {"author": "string", "t": "int64", "failed": "bool"})
        codes, _ = pd.factorize(pd.concat([ent["author"], ev["author"], lab["author"]], ignore_index=True))
        codes = codes.astype(np.int64)
        q_author = codes[: len(ent)]
        ev_author = codes[len(ent) : len(ent) + len(ev)]
        lab_author = codes[len(ent) + len(ev) :]
        t = ent["t"].to_numpy(dtype=np.int64)

        qa = Queries.of(q_author, t)
        known = ev_author >= 0
        by_author = sort_events(ev_author[known], ev["t"].to_numpy(dtype=np.int64)[known])
        prior_deploys = count_before(by_author, qa.groups, qa.times)
        before_recent = count_before(by_author, qa.groups, qa.times - AUTHOR_RECENT_WINDOW)
        cols = qa.restore(author_activity(prior_deploys, before_recent))
        everyone = Queries.of(np.zeros(len(t), dtype=np.int64), t)
        n_all, f_all = _counts(zeros, all_t, all_failed, everyone)
        prior = failure_prior(f_all, n_all, config)
        n_auth, f_auth = _counts(lab_author, lab["t"].to_numpy(dtype=np.int64), lab["failed"].to_numpy(bool), qa)
        result = pd.DataFrame(
            {
                "deploy_id": ent["deploy_id"].to_numpy(),
                **cols,
                "author_matured_labels": n_auth,
                "author_failure_rate": smoothed_rate(f_auth, n_auth, prior, w),
                "prior_failure_rate": prior,
            }
        )
        for partition, rows in result.groupby(ent["partition"].to_numpy(), sort=False):
            folder = out_dir / str(partition)
            folder.mkdir(parents=True, exist_ok=True)
            rows.to_parquet(folder / f"bucket-{b}.parquet", index=False)
    for folder in (events_dir, labels_dir, entities_dir, timeline_dir):
        shutil.rmtree(folder, ignore_errors=True)
    return out_dir


# --------------------------------------------------------------------------------------------
# Pass 3: per-service features with the cross-service columns filled in


def _service_label_failures(labels: pd.DataFrame, history: History, config: FeatureConfig, t: np.ndarray) -> np.ndarray:
    """Failed, matured labels of this service's counted deploys strictly before each time."""
    _, label_events, _ = _partition_events(history, labels, config, lambda d: pd.Series(False, index=d.index))
    failed_t = np.sort(label_events["t"].to_numpy(dtype=np.int64)[label_events["failed"].to_numpy(dtype=bool)])
    return np.searchsorted(failed_t, t, side="left").astype(np.float64)


def build_partition(
    parts: Partitions, aggregates: Path, service: str | None, config: FeatureConfig, select: EntityFilter | None = None
) -> pd.DataFrame:
    """Features of one service partition's entity deploys, equal to the monolithic build's rows."""
    history, labels = read_partition_history(parts, service)
    deploys = history.deploys
    entities = deploys if select is None else deploys[select(deploys).fillna(False).to_numpy(dtype=bool)]
    entities = entities.reset_index(drop=True)
    features = build_features(entities, history, labels, config)
    if features.empty:
        return features
    files = sorted((aggregates / _key(service)).glob("*.parquet"))
    agg = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True).set_index("deploy_id")
    agg = agg.reindex(features["deploy_id"].astype(str))
    if agg.isna().any().any():
        raise RuntimeError(f"author pass has no aggregates for some deploys of {service!r}; rerun it")
    for column in ("author_prior_deploys", "author_deploys_7d", "author_matured_labels", "author_failure_rate"):
        features[column] = agg[column].to_numpy(dtype=np.float64)
    t = utc_micros_column(features["created_at"], "features.created_at")[0]
    w = config.smoothing_prior_weight
    prior = agg["prior_failure_rate"].to_numpy(dtype=np.float64)
    f_svc = _service_label_failures(labels, history, config, t)
    n_svc = features["service_matured_labels"].to_numpy(dtype=np.float64)
    features["service_failure_rate"] = smoothed_rate(f_svc, n_svc, prior, w)
    return features


def build_partitioned(
    parts: Partitions,
    work: Path,
    config: FeatureConfig,
    out: Path | None = None,
    buckets: int = 16,
    select: EntityFilter | None = None,
) -> Iterator[tuple[str | None, pd.DataFrame]]:
    """Run the author pass, then yield (service, features) per partition (also written under ``out``).

    ``select`` picks the entity deploys of a partition (default: all of them), e.g. the matured,
    labelled deploys a training table needs.
    """
    aggregates = author_pass(parts, work, config, buckets, select)
    for service in parts.services:
        features = build_partition(parts, aggregates, service, config, select)
        if out is not None:
            folder = out / _key(service)
            folder.mkdir(parents=True, exist_ok=True)
            features.to_parquet(folder / "features.parquet", index=False)
        yield service, features
