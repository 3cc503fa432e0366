"""SeqNet person search: detect every pedestrian in a scene and re-identify the query person."""

__version__ = "0.1.0"
