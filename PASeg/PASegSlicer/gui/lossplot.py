"""The live loss curve of a training job as a Slicer plot: a table node, one series per loss, a chart node.

x = the number of iterations received so far (over all steps of the job), binned (see
:class:`LossCurvePlot`); the validation score is a second table on the same chart. Works on any scene (tested
headless); the widget shows the chart with the Plots logic's ``ShowChartInLayout``.
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


def _nanMean(values: Sequence[float], weights: Sequence[float] = ()) -> float:
    """Weighted mean of the finite ``values`` (equal weights by default); NaN when none is finite."""
    pairs = [(v, w) for v, w in zip(values, weights or [1.0] * len(values)) if v == v]
    total = sum(w for _, w in pairs)
    return float(sum(v * w for v, w in pairs) / total) if total else float("nan")


class LossCurvePlot:
    """Creates (on first update) and refreshes the loss-curve nodes in ``scene``.

    The curve is built incrementally: each :meth:`update` reads only the rows of the history added since the
    last call, and consecutive rows are averaged into bins so that at most ``maxPoints`` points are plotted
    (the bin width doubles when the curve gets longer). An update therefore costs O(new rows + maxPoints),
    however long the job has run (a rebuild from a 90,000-iteration history took ~210 ms on the GUI thread).
    """

    def __init__(self, scene, name: str = "PASeg training", maxPoints: int = 2000) -> None:
        if int(maxPoints) < 2:
            raise ValueError(f"maxPoints must be at least 2, got {maxPoints}")
        self.scene, self.name, self.maxPoints = scene, name, int(maxPoints)
        self.lossTable = self.scoreTable = self.chart = None
        self.series: Dict[str, Any] = {}
        self._reset(None)

    def _reset(self, source) -> None:
        self._source, self._consumed, self._stride = source, 0, 1
        self._names: List[str] = []
        self._x: List[float] = []  # bin centres, in rows received (1 = the first iteration of the job)
        self._counts: List[int] = []  # rows in each bin
        self._values: Dict[str, List[float]] = {}
        self._pending: List[Dict[str, Any]] = []  # rows of the bin being filled

    def _binPoint(self, rows: Sequence[Dict[str, Any]]) -> None:
        self._x.append(sum(self._counts) + (len(rows) + 1) / 2.0)
        self._counts.append(len(rows))
        for name in self._names:
            self._values[name].append(_nanMean([float(row.get(name, np.nan)) for row in rows]))

    def _halve(self) -> None:
        """Merge neighbouring bins pairwise (means weighted by their row counts); the bin width doubles."""
        pairs, counts = len(self._x) // 2, self._counts

        def merge(v: List[float]) -> List[float]:
            return [_nanMean(v[2 * n : 2 * n + 2], counts[2 * n : 2 * n + 2]) for n in range(pairs)] + v[2 * pairs :]

        self._x = merge(self._x)
        self._values = {name: merge(values) for name, values in self._values.items()}
        self._counts = [counts[2 * n] + counts[2 * n + 1] for n in range(pairs)] + counts[2 * pairs :]
        self._stride *= 2

    def _consume(self, lossHistory: Sequence[Dict[str, Any]]) -> None:
        if lossHistory is not self._source or len(lossHistory) < self._consumed:
            self._reset(lossHistory)  # a new job (a new history list)
        for row in lossHistory[self._consumed :]:
            for key in row:
                if key not in ("step", "iteration") and key not in self._names:
                    self._names.append(key)
                    self._values[key] = [float("nan")] * len(self._x)
            self._pending.append(row)
            if len(self._pending) >= self._stride:
                self._binPoint(self._pending)
                self._pending = []
                if len(self._x) > self.maxPoints:
                    self._halve()
        self._consumed = len(lossHistory)

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
        """Show :attr:`JobState.lossHistory` / ``validationHistory`` (append-only lists of the running job).

        Rows of ``lossHistory`` already seen are not read again; a different list object starts a new curve.
        """
        self._ensureNodes()
        self._consume(lossHistory)
        x, values = list(self._x), {name: list(v) for name, v in self._values.items()}
        if self._pending:  # the bin being filled is shown as it is
            x.append(sum(self._counts) + (len(self._pending) + 1) / 2.0)
            for name in self._names:
                values[name].append(_nanMean([float(row.get(name, np.nan)) for row in self._pending]))
        losses = {"iteration": np.array(x, dtype=np.float64)}
        losses.update({name: np.array(values[name], dtype=np.float64) for name in self._names})
        _fillTable(self.lossTable, losses)
        scored = [v for v in validationHistory if v.get("score") is not None]
        _fillTable(self.scoreTable, {"iteration": np.array([float(v.get("x", n)) for n, v in enumerate(scored)]),
                                     "validation score": np.array([float(v["score"]) for v in scored])})  # fmt: skip
        for name in self._names:
            self._seriesFor(name, self.lossTable)
        if scored:
            self._seriesFor("validation score", self.scoreTable)

    def values(self, column: str) -> np.ndarray:
        """The plotted values of ``column`` (read back from the table node)."""
        tableNode = self.scoreTable if column == "validation score" else self.lossTable
        array = tableNode.GetTable().GetColumnByName(column)
        return np.array([array.GetValue(n) for n in range(array.GetNumberOfValues())])
