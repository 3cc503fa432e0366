"""What the ``seqnet*`` command lines share, so that they read and fail alike.

Click only: no torch and no training package, because ``-h`` must stay instant and must work on
the base install (the torch-free runtime). Heavy work is imported by ``run``, when a command runs.
"""

import importlib
import logging
import sys

import click

from seqnet_runtime.errors import SeqNetError

# -h as well as click's --help, on a group and every command under it (contexts inherit it)
HELP = {"help_option_names": ["-h", "--help"]}

# Imports that only ``pip install 'seqnet[train]'`` brings: their absence is an install to do,
# not a bug, so it is said in one line instead of a traceback.
TRAIN_STACK = frozenset({"torch", "torchvision", "scipy", "sklearn", "yacs", "yaml"})


def missing_stack(prog, error):
    """The one line for a ModuleNotFoundError that an extra fixes, or None (then it is a bug)."""
    if (error.name or "").split(".")[0] in TRAIN_STACK:
        return f"{prog}: needs the training stack: pip install 'seqnet[train]'"
    return None


def run(prog, target, args):
    """Import ``target`` ("module:function") and call it with ``args``.

    Importing here, not at the top of the CLI, keeps ``-h`` and every other command free of
    this command's imports. A user's problem (SeqNetError) ends as ``<prog>: error: <message>``
    with status 1, a missing optional dependency as ``missing_stack``'s line, Ctrl-C as 130.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    module, func = target.split(":")
    try:
        getattr(importlib.import_module(module), func)(args)
    except SeqNetError as e:
        sys.exit(f"{prog}: error: {e}")
    except ModuleNotFoundError as e:
        line = missing_stack(prog, e)
        if line is None:
            raise
        sys.exit(line)
    except KeyboardInterrupt:
        sys.exit(130)


def main(command, argv=None, prog=None):
    """``command.main`` for Python callers as well as the console: a command that succeeds
    returns (a script may run several in a row), while -h exits 0 and a usage error prints
    usage and exits 2, as in standalone mode. Callbacks must return None."""
    try:
        code = command.main(args=argv, prog_name=prog, standalone_mode=False)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.Abort:  # Ctrl-C before the command ran
        sys.exit(130)
    if code is not None:  # click's Exit, e.g. after -h
        sys.exit(code)
