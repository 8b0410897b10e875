"""Real-data evidence: the four Kamei et al. JIT projects through the generic connector and training.

For each project a sources.yaml maps the CSV onto the deploys table (``label: bug``, the 14 change
metrics as ``extra_features``); the generic connector and ingest checks read it; attribution takes
the external label; point-in-time features are built; ``models.training.train`` runs the usual
rolling-origin search and calibration; the latest 20% of changes (by commit date) are the test.
Next to the model: the lines-added logistic regression (LApredict) and a logistic regression on
all 14 metrics (Kamei et al.), fitted on the same training period.

la/ld are relative to lt in this data, so effort = (la + ld) * lt lines (churn, Kamei's effort
measure) and lines added = la * lt; a change to new files only (lt = 0) costs one line.

    .venv/bin/python -m benchmarks.jit [--projects bugzilla columba] [--out jit.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from features.history.ingest import prepare_source_file
from features.history.schema import DEPLOYS, INCIDENTS, TOGGLE_EVENTS, History, canonical_order, empty_table
from features.labels.attribution import AttributionConfig
from features.pointintime.compute import FeatureConfig
from features.sources.config import load_sources_config
from features.sources.kinds import source_kinds
from models.training.config import TrainConfig
from models.training.dataset import build_training_table
from models.training.estimators import RiskClassifier
from models.training.evaluation import evaluate
from models.training.train import EFFORT, LABEL, SIZE, TrainingTable, train

DATA = Path("/work/shared/data/jit")
METRICS = ["ns", "nm", "nf", "entropy", "la", "ld", "lt", "fix", "ndev", "pd", "npt", "exp", "rexp", "sexp"]
#: Where each project was mostly developed; commit dates are local times without a zone.
TIMEZONES = {
    "bugzilla": "America/Los_Angeles",  # Mozilla, Mountain View
    "columba": "Europe/Berlin",  # Columba mail client, German core team
    "jdt": "America/Toronto",  # Eclipse JDT, IBM Ottawa
    "postgres": "America/New_York",  # PostgreSQL core, mostly North American committers
}
SOURCES_YAML = """sources:
  - name: {project}
    kind: generic
    table: deploys
    format: csv
    path: {csv}
    columns:
      deploy_id: transactionid
      created_at: commitdate
    timestamp_format: "%Y/%m/%d %H:%M"
    timezone: {timezone}
    time_bounds: {{not_before: 1990-01-01}}  # the projects' histories start in the late 1990s
    label: bug
    extra_features: [{metrics}]
    defaults:
      service: {project}
      environment: production
      status: success
"""


def load_history(project: str, workdir: Path) -> tuple[History, int]:
    """The project's CSV through sources.yaml, the generic connector and the ingest checks."""
    config_path = workdir / f"{project}.sources.yaml"
    config_path.write_text(
        SOURCES_YAML.format(
            project=project,
            csv=DATA / f"kamei_{project}.csv",
            timezone=TIMEZONES[project],
            metrics=", ".join(METRICS),
        )
    )
    config = load_sources_config(config_path, source_kinds())
    source = config.sources[0]
    path = source.paths[0]
    prepared = prepare_source_file(source, path, source.parse(path))
    deploys = canonical_order(DEPLOYS, prepared.rows)
    return History(deploys, empty_table(TOGGLE_EVENTS), empty_table(INCIDENTS)), prepared.quarantined


def with_effort(table: TrainingTable) -> TrainingTable:
    """Effort and lines added in absolute lines (la/ld are fractions of lt in this data)."""
    f = table.frame.copy()
    lt = f["extra_lt"].to_numpy(dtype=np.float64)
    f[EFFORT] = (f["extra_la"] + f["extra_ld"]).to_numpy(dtype=np.float64) * lt
    f[SIZE] = f["extra_la"].to_numpy(dtype=np.float64) * lt
    return TrainingTable(
        f, table.numeric, table.categorical, table.excluded, table.label_rule, table.feature_set_version
    )


def kamei_lr(train_frame: pd.DataFrame, test_frame: pd.DataFrame) -> np.ndarray:
    """Logistic regression on the 14 metrics (log-transformed, standardised), as in Kamei et al."""
    cols = tuple(f"extra_{m}" for m in METRICS)
    clf = RiskClassifier(LogisticRegression(C=1.0, max_iter=3000), numeric=cols)
    clf.fit(train_frame[list(cols)], train_frame[LABEL].to_numpy())
    return clf.predict_proba(test_frame[list(cols)])[:, 1]


def run_project(project: str, config: TrainConfig, workdir: Path) -> dict[str, object]:
    started = time.perf_counter()
    history, quarantined = load_history(project, workdir)
    table = with_effort(build_training_table(history, AttributionConfig(), FeatureConfig()))
    prepared = time.perf_counter() - started
    result = train(table, config)
    test, effort = result.test_frame, result.test_frame[EFFORT].to_numpy(dtype=np.float64)
    train_frame = table.sorted().frame.iloc[: result.n_train]
    y = test[LABEL].to_numpy()
    lr14 = evaluate(y, kamei_lr(train_frame, test), effort)
    return {
        "project": project,
        "rows": len(history.deploys),
        "quarantined": quarantined,
        "excluded": table.excluded,
        "n_train": result.n_train,
        "n_test": result.n_test,
        "test_failure_rate": float(y.mean()),
        "chosen": result.chosen.name,
        "calibration": result.calibration,
        "model": result.test_metrics,
        "lines_added_lr": result.baseline_metrics["lines_added"],
        "kamei_lr14": lr14,
        "seconds_prepare": prepared,
        "seconds_train": sum(result.seconds.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--projects", nargs="*", default=list(TIMEZONES))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    config = TrainConfig()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, threadpool_limits(limits=config.n_threads):
        for project in args.projects:
            row = run_project(project, config, Path(tmp))
            rows.append(row)
            print(
                f"{project}: {row['n_train']}/{row['n_test']} train/test, chosen {row['chosen']}, "
                f"{row['seconds_prepare']:.0f}s prepare + {row['seconds_train']:.0f}s train",
                flush=True,
            )
    keys = ("roc_auc", "pr_auc", "recall_at_20pct_effort")
    header = ["project", "test rate"] + [f"{who} {k}" for k in keys for who in ("model", "LA", "LR14")]
    table = pd.DataFrame(
        [
            [r["project"], r["test_failure_rate"]]
            + [r[who][k] for k in keys for who in ("model", "lines_added_lr", "kamei_lr14")]  # type: ignore[index]
            for r in rows
        ],
        columns=header,
    )
    mean = table.drop(columns="project").mean()
    table.loc[len(table)] = ["mean", *mean.tolist()]
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.3f}".format):
        print(table.to_string(index=False))
    if args.out is not None:
        args.out.write_text(json.dumps(rows, indent=2, default=str))


if __name__ == "__main__":
    main()
