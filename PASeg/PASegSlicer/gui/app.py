"""What the panels are given: the Slicer application's services (:class:`App`, implemented by :class:`SlicerApp`) and
the parameters they read and write (:class:`Parameters`).

A panel never reaches for ``slicer.app``, ``slicer.util``, ``qt`` or the module widget itself: it calls the
:class:`App` it was given. In Slicer that is :class:`SlicerApp` (each method is the ``slicer.util`` / module-logic
call of the same name); headless tests give another object with the same methods, the scene and the Markups
logic being real MRML there too.
"""

from __future__ import annotations

import pathlib
from typing import Any, Callable, ContextManager, List, Optional, Protocol


class Timer(Protocol):
    """A single-shot timer (``qt.QTimer``): :meth:`start` (re)starts the countdown, the slot runs once at its end."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def isActive(self) -> bool: ...


class App(Protocol):
    """The Slicer application as the panels use it (see module docstring)."""

    def markupsLogic(self) -> Any: ...

    def interactionNode(self) -> Any: ...

    def timer(self, milliseconds: int, slot: Callable[[], None]) -> Timer: ...

    def setting(self, key: str, default: str) -> str: ...

    def setSetting(self, key: str, value: str) -> None: ...

    def showStatusMessage(self, text: str, milliseconds: int) -> None: ...

    def infoDisplay(self, text: str) -> None: ...

    def warningDisplay(self, text: str) -> None: ...

    def errorDisplay(self, text: str) -> None: ...

    def confirmYesNoDisplay(self, text: str) -> bool: ...

    def confirmOkCancelDisplay(self, text: str) -> bool: ...

    def pip_install(self, arguments: List[str]) -> None: ...

    def tryWithErrorDisplay(self, message: str, waitCursor: bool = False) -> ContextManager: ...

    def openFileName(self, title: str, filters: str) -> str: ...

    def setSliceViewerLayers(self, background: Any, fit: bool = False) -> None: ...

    def showChart(self, chartNode: Any) -> None: ...

    def shortcut(self, key: str, slot: Callable[[], Any]) -> ShortcutHandle: ...

    def getText(self, title: str, label: str, text: str = "") -> Optional[str]: ...


class ShortcutHandle(Protocol):
    """A keyboard shortcut (``qt.QShortcut``): :meth:`setEnabled`, and :meth:`deleteLater` to remove it."""

    def setEnabled(self, enabled: bool) -> None: ...

    def deleteLater(self) -> None: ...


class Parameters(Protocol):
    """The fields of the module's parameter node (``PASegParameterNode`` in ``PASeg.py``) the panels use."""

    inputVolume: Any
    datasetFolder: pathlib.Path
    workFolder: pathlib.Path
    autoPreview: bool
    trainMode: str
    networkA: str
    networkB: str
    scmRunA: pathlib.Path
    scmRunB: pathlib.Path
    epochs: int
    deviceMode: str
    gpuIndex: int
    trainConfig: pathlib.Path
    modelRunDir: pathlib.Path
    restrictToBox: bool
    largestComponent: bool


#: ``parameters()``: the module's parameter node, also while the module is hidden; ``shownParameters()``: the same
#: while the module is shown, else ``None`` (the widget's, released on ``exit()``).
ParameterGetter = Callable[[], Parameters]
ShownParameterGetter = Callable[[], Optional[Parameters]]


def singleShotTimer(milliseconds: int, slot: Callable[[], None]):
    """A single-shot ``qt.QTimer`` calling ``slot`` ``milliseconds`` after each ``start()`` (a restart postpones
    it: the debounce of edits); keep a reference to it."""
    import qt

    timer = qt.QTimer()
    timer.setSingleShot(True)
    timer.setInterval(int(milliseconds))
    timer.timeout.connect(slot)
    return timer


class SlicerApp:
    """:class:`App` in Slicer: ``slicer.util``, ``qt``, and the Markups and Plots module logics."""

    def markupsLogic(self):
        import slicer

        return slicer.modules.markups.logic()

    def interactionNode(self):
        import slicer

        return slicer.app.applicationLogic().GetInteractionNode()

    def timer(self, milliseconds: int, slot: Callable[[], None]):
        return singleShotTimer(milliseconds, slot)

    def setting(self, key: str, default: str) -> str:
        import qt

        return str(qt.QSettings().value(key, default) or default)

    def setSetting(self, key: str, value: str) -> None:
        import qt

        qt.QSettings().setValue(key, value)

    def showStatusMessage(self, text: str, milliseconds: int) -> None:
        import slicer

        slicer.util.showStatusMessage(text, milliseconds)

    def infoDisplay(self, text: str) -> None:
        import slicer

        slicer.util.infoDisplay(text)

    def warningDisplay(self, text: str) -> None:
        import slicer

        slicer.util.warningDisplay(text)

    def errorDisplay(self, text: str) -> None:
        import slicer

        slicer.util.errorDisplay(text)

    def confirmYesNoDisplay(self, text: str) -> bool:
        import slicer

        return bool(slicer.util.confirmYesNoDisplay(text))

    def confirmOkCancelDisplay(self, text: str) -> bool:
        import slicer

        return bool(slicer.util.confirmOkCancelDisplay(text))

    def pip_install(self, arguments: List[str]) -> None:
        import slicer

        slicer.util.pip_install(arguments)

    def tryWithErrorDisplay(self, message: str, waitCursor: bool = False):
        """Shows the exception's message under ``message`` in an error dialog, and re-raises it."""
        import slicer

        return slicer.util.tryWithErrorDisplay(message, waitCursor=waitCursor)

    def openFileName(self, title: str, filters: str) -> str:
        import qt
        import slicer

        return qt.QFileDialog.getOpenFileName(slicer.util.mainWindow(), title, "", filters)

    def setSliceViewerLayers(self, background, fit: bool = False) -> None:
        import slicer

        slicer.util.setSliceViewerLayers(background=background, fit=fit)

    def showChart(self, chartNode) -> None:
        import slicer

        slicer.modules.plots.logic().ShowChartInLayout(chartNode)

    def shortcut(self, key: str, slot: Callable[[], Any]):
        """A ``qt.QShortcut`` of the main window (its views, panels and docked widgets); keep a reference to it."""
        import qt
        import slicer

        shortcut = qt.QShortcut(qt.QKeySequence(key), slicer.util.mainWindow())
        shortcut.setContext(qt.Qt.WindowShortcut)
        shortcut.activated.connect(slot)
        return shortcut

    def getText(self, title: str, label: str, text: str = "") -> Optional[str]:
        """The text typed into a one-line input dialog; ``None`` when cancelled (or left empty)."""
        import qt
        import slicer

        typed = qt.QInputDialog.getText(slicer.util.mainWindow(), title, label, qt.QLineEdit.Normal, text)
        if isinstance(typed, tuple):  # (text, ok) where the binding returns the out-argument
            typed = typed[0] if typed[1] else ""
        return str(typed) if typed else None
