"""``seqnet demo`` and ``seqnet search``: person search on a user's own images or video.

One job per module: ``images`` / ``video`` read and validate inputs, ``gallery`` turns a folder
or a video into frames, ``session`` loads the model, ``index`` keeps the gallery's detections,
``draw`` and ``html`` render results, ``output`` writes them all or nothing.
"""
