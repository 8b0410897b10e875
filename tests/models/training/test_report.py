"""The report's charts are readable: no legend over the bars, no tick labels over each other, gain lines named."""

from __future__ import annotations

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from threadpoolctl import threadpool_limits

from models.training.config import CandidateGrid, TrainConfig
from models.training.report import baselines_figure, gain_figure, groups_figure
from models.training.train import train
from tests.helpers.synthetic import synthetic_table

CONFIG = TrainConfig(candidates=(CandidateGrid("logreg", (("C", (0.3,)),)),), n_splits=3, permutation_repeats=1)


@pytest.fixture(scope="module")
def result():
    with threadpool_limits(limits=1):
        return train(synthetic_table(900, seed=7)[0], CONFIG)


def _drawn(fig: Figure):
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_group_legends_sit_outside_the_bars(result) -> None:
    fig = groups_figure(result)
    renderer = _drawn(fig)
    for ax in fig.axes:
        legend = ax.get_legend().get_window_extent(renderer)
        assert not _overlap(legend, ax.get_window_extent(renderer))
        assert not _overlap(legend, ax.title.get_window_extent(renderer))


def test_baseline_labels_and_legend_do_not_collide(result) -> None:
    fig = baselines_figure(result)
    renderer = _drawn(fig)
    ax = fig.axes[0]
    labels = [t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_text()]
    assert len(labels) == 5
    assert not any(_overlap(a, b) for i, a in enumerate(labels) for b in labels[i + 1 :])
    assert not _overlap(ax.get_legend().get_window_extent(renderer), ax.get_window_extent(renderer))


def test_gain_share_lines_are_labelled(result) -> None:
    ax = gain_figure(result).axes[0]
    assert sorted(t.get_text() for t in ax.texts) == ["gate 10%", "gate 20%", "gate 5%"]
