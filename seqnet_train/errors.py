"""The toolkit's one user-facing exception (defined by the runtime, which imports no training
code): the CLI prints its message, not a traceback."""

from seqnet_runtime.errors import SeqNetError

__all__ = ["SeqNetError"]
