"""The live loss curve of a training job as a Slicer plot: a table node, one series per loss, a chart node.

x = the number of iterations received so far (over all steps of the job); the label-free validation score
is a second table on the same chart. Works on any scene (tested headless); the widget shows the chart with
the Plots logic's ``ShowChartInLayout``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

import numpy as np

_COLORS = [(0.85, 0.2, 0.2), (0.2, 0.45, 0.85), (0.2, 0.7, 0.3), (0.8, 0.55, 0.1), (0.55, 0.3, 0.75), (0.3, 0.3, 0.3)]


def _fillTable(tableNode, columns: Dict[str, np.ndarray]) -> None:
    import vtk
    from vtk.util import numpy_support

    table = vtk.vtkTable()
    for name, values in columns.items():
        array = numpy_support.numpy_to_vtk(np.asarray(values, dtype=np.float64), deep=True)
        array.SetName(name)
        table.AddColumn(array)
    tableNode.SetAndObserveTable(table)


class LossCurvePlot:
    """Creates (on first update) and refreshes the loss-curve nodes in ``scene``."""

    def __init__(self, scene, name: str = "PASeg training") -> None:
        self.scene, self.name = scene, name
        self.lossTable = self.scoreTable = self.chart = None
        self.series: Dict[str, Any] = {}

    def _ensureNodes(self) -> None:
        if self.chart is not None and self.scene.IsNodePresent(self.chart):
            return
        self.lossTable = self.scene.AddNewNodeByClass("vtkMRMLTableNode", f"{self.name} losses")
        self.scoreTable = self.scene.AddNewNodeByClass("vtkMRMLTableNode", f"{self.name} validation")
        self.chart = self.scene.AddNewNodeByClass("vtkMRMLPlotChartNode", f"{self.name} curves")
        self.chart.SetTitle("PASeg training")
        self.chart.SetXAxisTitle("iteration")
        self.chart.SetYAxisTitle("loss / score")
        self.series = {}

    def _seriesFor(self, column: str, tableNode) -> Any:
        if column not in self.series:
            import slicer

            series = self.scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{self.name} {column}")
            series.SetAndObserveTableNodeID(tableNode.GetID())
            series.SetXColumnName("iteration")
            series.SetYColumnName(column)
            series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
            series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone)
            series.SetColor(*_COLORS[len(self.series) % len(_COLORS)])
            self.chart.AddAndObservePlotSeriesNodeID(series.GetID())
            self.series[column] = series
        return self.series[column]

    def update(self, lossHistory: Sequence[Dict[str, Any]], validationHistory: Sequence[Dict[str, Any]] = ()) -> None:
        """Rebuild the tables from :attr:`JobState.lossHistory` / ``validationHistory``."""
        self._ensureNodes()
        names: List[str] = []
        for row in lossHistory:
            names.extend(k for k in row if k not in ("step", "iteration") and k not in names)
        x = np.arange(1, len(lossHistory) + 1, dtype=np.float64)
        losses = {"iteration": x}
        for name in names:
            losses[name] = np.array([float(row.get(name, np.nan)) for row in lossHistory])
        _fillTable(self.lossTable, losses)
        scored = [v for v in validationHistory if v.get("score") is not None]
        _fillTable(self.scoreTable, {"iteration": np.array([float(v.get("x", n)) for n, v in enumerate(scored)]),
                                     "validation score": np.array([float(v["score"]) for v in scored])})  # fmt: skip
        for name in names:
            self._seriesFor(name, self.lossTable)
        if scored:
            self._seriesFor("validation score", self.scoreTable)

    def values(self, column: str) -> np.ndarray:
        """The plotted values of ``column`` (read back from the table node)."""
        tableNode = self.scoreTable if column == "validation score" else self.lossTable
        array = tableNode.GetTable().GetColumnByName(column)
        return np.array([array.GetValue(n) for n in range(array.GetNumberOfValues())])
