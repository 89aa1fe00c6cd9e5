"""Background jobs (training, prediction, the GPU probe) in child processes: their folders and commands
(:mod:`.commands`, :mod:`.devices`), the runner and its process backends (:mod:`.runner`, :mod:`.processes`,
:mod:`.qtprocess`), what their progress lines say (:mod:`.state`), starting and finishing them (:mod:`.control`),
the model list (:mod:`.models`) and Python packages on demand (:mod:`.dependencies`). torch is never imported in
this process: the children import it. Imports :mod:`PASegSlicer.annotation` and :mod:`PASegSlicer.mrml`."""
