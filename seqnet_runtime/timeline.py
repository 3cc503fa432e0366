"""``timeline.png``: each query's best similarity per processed frame over time."""

from seqnet_runtime.draw import query_colour


def plot(path, series, threshold, xlabel, spans=None):
    """``series``: ``[(query name, xs, best similarities (None: nobody detected))]``;
    ``spans``: per series the ``(start, end)`` of its appearances, shaded in its colour."""
    # imported here: matplotlib takes seconds to import, and what imports this module (a Ray
    # segment worker, ``seqnet-run --help``) mostly never plots
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed (and none on a server)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 3.2), dpi=100)
    for n, (name, xs, ys) in enumerate(series):
        colour = [c / 255 for c in query_colour(n)]
        for start, end in (spans or {}).get(n, ()):
            ax.axvspan(start, end if end > start else start + 0.05, color=colour, alpha=0.15, lw=0)
        ys = [float("nan") if y is None else y for y in ys]
        ax.plot(xs, ys, "-", color=colour, lw=1.4, label=name, marker="." if len(xs) < 60 else "")
    ax.axhline(threshold, color="0.3", ls="--", lw=1, label=f"threshold {threshold:g}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("best similarity")
    ax.set_ylim(min(-0.05, ax.get_ylim()[0]), 1.0)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
