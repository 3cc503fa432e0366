"""Evaluation: one inference pass to an outputs file, then every standard protocol from it.

Protocols follow ``EVALUATION.md`` (the established code's numbers, vectorised): detection
recall/AP, CUHK-SYSU search for each gallery size and the whole pool, PRW all-gallery and
cross-camera search, CBGM rescoring, and the GT-box upper bound (``EVAL_USE_GT``).
"""

from seqnet_train.evaluation.run import evaluate, evaluate_checkpoint, score_outputs

__all__ = ["evaluate", "evaluate_checkpoint", "score_outputs"]
