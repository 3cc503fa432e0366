"""The one convention for person identities, used by the loaders, the model and the losses.

Training targets carry a *contiguous index* 0..K-1 for each labelled identity (K =
``MODEL.LOSS.LUT_SIZE`` at most, one OIM lookup-table row each) and ``UNLABELED`` for people
without an identity. Evaluation keeps the identities as written in the dataset files, with the
established loaders' conventions for the special values below.
"""

UNLABELED = -1  # training index of a person without identity (goes to the OIM queue)

RAW_UNLABELED = 5555  # raw pid the established loaders write for unlabelled people
RAW_QUERY_DUMMY = -100  # raw pid the established loaders give CUHK-SYSU query boxes
