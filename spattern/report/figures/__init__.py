"""Report figures: each function takes data read from ``results/`` (``spattern.report.data``)
and returns a matplotlib Figure in the report's style. One file per figure kind."""

from spattern.report.figures.ablation import ablation_figure
from spattern.report.figures.cost import cost_figure, cost_points
from spattern.report.figures.heatmap import heatmap_figure
from spattern.report.figures.indexer import indexer_caption, indexer_figure
from spattern.report.figures.kernels import kernel_figure
from spattern.report.figures.quality import quality_figure, quality_matched_figure, quality_sweeps_figure, single_density
from spattern.report.figures.synthetic import synthetic_figure, synthetic_panels
from spattern.report.figures.training import training_panels

__all__ = ["ablation_figure", "cost_figure", "cost_points", "heatmap_figure", "indexer_caption", "indexer_figure", "kernel_figure",
           "quality_figure", "quality_matched_figure", "quality_sweeps_figure", "single_density", "synthetic_figure", "synthetic_panels", "training_panels"]
