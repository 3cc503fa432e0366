"""SeqNet person search on a model, without PyTorch: the runtime's public API and search app.

``load(model, backend=...)`` opens a ``Session`` (``backend``: the interface every backend
implements); ``search`` and ``demo`` are the app, over images and video. One job per module:
``images`` / ``video`` read and validate inputs, ``gallery`` turns a folder or a video into
frames, ``index`` keeps the gallery's detections, ``draw`` and ``html`` render results,
``output`` writes them all or nothing. Nothing here imports torch or the training package,
unless the PyTorch backend is asked for.
"""

from seqnet_runtime.backend import Session, load
from seqnet_runtime.errors import SeqNetError

__all__ = ["Session", "SeqNetError", "load"]
