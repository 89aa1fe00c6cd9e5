"""The keyboard shortcuts of the annotation panel: one table (:data:`SHORTCUTS`) gives each key, its action, its help
text and its handler; it also writes the help (:func:`helpText`, :func:`markdownTable`).

The keys avoid Slicer's own (5.8-5.12; the test lists each with its source): the slice views use the arrows,
``b`` ``f`` ``v`` ``V`` ``r`` ``g`` ``t`` ``[`` ``]`` ``{`` ``}``, Escape, and on a hovered control point ``s``
(snap to the slice), Delete and Backspace; the 3D views Home, End, Page Down, Insert, ``+`` ``-``, the keypad and
Ctrl+B; the application Ctrl+F, O, S, W, H, Z, Y, Ctrl+0…6, Ctrl+Left / Ctrl+Right and (since 5.10) Alt+Left /
Alt+Right (previous / next module), Ctrl+Shift+A, T and Space (Markups), Ctrl+Shift+Left / Right / Down
(Sequences). A key typed in a text field (a path, the Python console) stays the field's: Qt gives keys that
type text (``Shift+S`` too) to the focused editor first. The shortcuts are active while the module is shown
(:meth:`~PASegSlicer.gui.caseflow.CaseFlow.setShortcutsEnabled`, from the widget's ``enter`` / ``exit``), so they
never meet the Segment Editor's own single keys (installed while it is shown); undo and redo are ``z`` and ``y``
there too, and ``,`` / ``.`` its previous / next segment.

A handler is a button's ``click`` where the panel has a button (a disabled button ignores its key), else a panel
method; a method the panel lacks (``onReviewNext`` before the review queue exists) leaves its key unbound.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Tuple


@dataclass(frozen=True)
class Shortcut:
    """``key``: a ``QKeySequence`` text (``"A"`` is the A key without Shift); ``handler(panel)``: the slot, or
    ``None`` when the panel has no such action."""

    key: str
    action: str
    help: str
    handler: Callable[[Any], Optional[Callable[[], Any]]]

    @property
    def keyText(self) -> str:
        """The key as the help shows it: ``a``, ``,``, ``Shift+S``."""
        return self.key.lower() if len(self.key) == 1 else self.key


SHORTCUTS: Tuple[Shortcut, ...] = (
    Shortcut("A", "addTumor", "add a tumor of the chosen kind and start placing its points",
             lambda p: p.ui.addTumorButton.click),
    Shortcut("P", "placeNext", "place the next point of the selected tumor (Continue placing)",
             lambda p: p.ui.placeButton.click),
    Shortcut("E", "preview", "preview the pseudo label of the tumors (expansion)", lambda p: p.ui.previewButton.click),
    Shortcut("Z", "undo", "undo the last point placed, moved or unplaced (or the tumor added, renamed, deleted)",
             lambda p: lambda: p.flow.onUndo()),
    Shortcut("Y", "redo", "redo what undo took back", lambda p: lambda: p.flow.onRedo()),
    Shortcut("D", "deleteTumor", "delete the selected tumor (asks first; z brings it back)",
             lambda p: p.ui.deleteTumorButton.click),
    Shortcut("Shift+S", "saveAndNext", "save the case (into the dataset when complete, else asks: keep a draft or "
             "stay) and open the next case not annotated yet", lambda p: p.ui.saveAndNextButton.click),
    Shortcut(",", "previousCase", "open the previous case", lambda p: p.ui.previousCaseButton.click),
    Shortcut(".", "nextCase", "open the next case", lambda p: p.ui.nextCaseButton.click),
    Shortcut("N", "reviewNext", "open the next case of the review queue (once a model has ranked the cases)",
             lambda p: getattr(p, "onReviewNext", None)),
)  # fmt: skip


def install(app, panel) -> List[Tuple[Shortcut, Any]]:
    """Bind every shortcut whose handler the panel has (``app.shortcut``); returns (shortcut, handle) pairs."""
    installed = []
    for shortcut in SHORTCUTS:
        slot = shortcut.handler(panel)
        if slot is not None:
            installed.append((shortcut, app.shortcut(shortcut.key, slot)))
    return installed


def helpText(shortcuts=SHORTCUTS) -> str:
    """The shortcuts as the module's help shows them (HTML: Slicer's help text is rich text)."""
    rows = "".join(f"<li><b>{s.keyText}</b>: {s.help}</li>" for s in shortcuts)
    return "Keyboard shortcuts (while the module is shown, outside text fields):<ul>" + rows + "</ul>"


def markdownTable(shortcuts=SHORTCUTS) -> str:
    """The shortcuts as a Markdown table (the README)."""
    lines = ["| Key | Action |", "| --- | --- |"]
    lines += [f"| `{s.keyText}` | {s.help} |" for s in shortcuts]
    return "\n".join(lines)
