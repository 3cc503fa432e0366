"""Crash injection for the resume tests: ``SEQNET_KILL_AT=<point>`` SIGKILLs the process there.

Points: ``step:<iteration>`` (after the backward pass, before the optimizer step),
``save:<checkpoint name>`` (file written, not yet renamed), ``eval:<epoch>``.
"""

import os
import signal


def maybe_die(point):
    if os.environ.get("SEQNET_KILL_AT") == point:
        os.kill(os.getpid(), signal.SIGKILL)
