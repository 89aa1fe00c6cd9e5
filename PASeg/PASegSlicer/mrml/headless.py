"""A real MRML scene without the Slicer application (``slicer-core`` wheel), for tests and scripts.

In a bare process the segmentation converter has no rules and segments cannot be created; giving the
module logics a scene (as the Slicer application does at startup) registers them. This mirrors
``qSlicerCoreApplication``: an application logic with the default color nodes, and the Volumes,
Segmentations, Markups and Subject Hierarchy logics registered on it. Inside Slicer use ``slicer.mrmlScene``.
"""

from __future__ import annotations

from typing import Any, Dict


class HeadlessSlicer:
    """Holds the scene and the logics (they must stay alive as long as the scene is used)."""

    def __init__(self) -> None:
        import slicer
        from vtkmodules.vtkCommonCore import vtkCollection

        self.scene = slicer.vtkMRMLScene()
        crosshair = slicer.vtkMRMLCrosshairNode()
        crosshair.SetCrosshairName("default")
        self.scene.AddNode(crosshair)
        self.appLogic = slicer.vtkSlicerApplicationLogic()
        self.appLogic.SetMRMLScene(self.scene)
        self.appLogic.GetColorLogic().SetMRMLScene(self.scene)
        self.appLogic.GetColorLogic().AddDefaultColorNodes()
        self.appLogic.SetSliceLogics(vtkCollection())
        self.appLogic.SetViewLogics(vtkCollection())
        self.logics: Dict[str, Any] = {}
        for name, cls in (
            ("Volumes", slicer.vtkSlicerVolumesLogic),
            ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic),
            ("Markups", slicer.vtkSlicerMarkupsLogic),
            ("SubjectHierarchy", slicer.vtkSlicerSubjectHierarchyModuleLogic),
            ("Plots", slicer.vtkSlicerPlotsLogic),
        ):
            logic = cls()
            logic.SetMRMLScene(self.scene)
            logic.SetMRMLApplicationLogic(self.appLogic)
            self.appLogic.SetModuleLogic(name, logic)
            self.logics[name] = logic

    def close(self) -> None:
        """Clear the scene and release the logics (detaching them one by one only makes VTK warn)."""
        self.scene.Clear(True)
        self.logics.clear()
