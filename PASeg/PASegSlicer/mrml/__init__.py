"""MRML nodes ↔ PASegLib data: volume nodes and volumes, segmentation nodes and label maps, and a real scene
without the Slicer application (:mod:`.headless`, for tests and scripts). Imports nothing else of PASegSlicer."""
