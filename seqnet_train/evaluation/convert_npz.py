"""``python -m seqnet_train.evaluation.convert_npz IN.npz OUT.pt``: an evalgold-style ``.npz`` (same
keys) to our outputs file. ``seqnet score`` also reads ``.npz`` directly."""

import sys

from seqnet_train.errors import SeqNetError
from seqnet_train.evaluation.outputs import load_outputs, save_outputs


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        sys.exit("usage: python -m seqnet_train.evaluation.convert_npz IN.npz OUT.pt")
    try:
        save_outputs(load_outputs(argv[0]), argv[1])
    except SeqNetError as e:
        sys.exit(f"convert_npz: error: {e}")


if __name__ == "__main__":
    main()
