"""What a user reads: the printed table, metrics.json, the CUHK-SYSU curve, per-query top-10."""

import re

from seqnet_runtime import fs


def format_table(metrics):
    """Detection line, then one row per search protocol: mAP and top-1/5/10 in percent."""
    lines = []
    if "det/recall" in metrics:
        lines.append(
            f"detection  recall {100 * metrics['det/recall']:.2f}  AP {100 * metrics['det/ap']:.2f}"
            f"  | labelled: recall {100 * metrics['det_labeled/recall']:.2f}"
            f"  AP {100 * metrics['det_labeled/ap']:.2f}"
        )
    rows = sorted({k.rsplit("/", 1)[0] for k in metrics if k.startswith("search")}, key=_order)
    if rows:
        lines.append(f"{'protocol':<24}{'mAP':>8}{'top-1':>8}{'top-5':>8}{'top-10':>8}")
    for row in rows:
        vals = "".join(
            f"{100 * metrics[f'{row}/{k}']:>8.2f}" for k in ("mAP", "top1", "top5", "top10")
        )
        lines.append(f"{row:<24}{vals}")
    return "\n".join(lines)


def _order(row):
    prefix, name = row.split("/", 1)
    size = re.fullmatch(r"G(\d+)", name)
    return (prefix, int(size.group(1)) if size else 10**9, name)


def write_json(obj, path):
    """Atomically (``seqnet_runtime.fs``)."""
    fs.write_json(path, obj, indent=1)


def plot_curve(metrics, path):
    """CUHK-SYSU mAP over gallery size (the paper's Fig. 5), with CBGM when it ran.

    Returns False (nothing written) when fewer than two gallery sizes were scored.
    """
    curves = {}
    for key, value in metrics.items():
        m = re.fullmatch(r"(search\w*)/G(\d+)/mAP", key)
        if m:
            curves.setdefault(m.group(1), []).append((int(m.group(2)), 100 * value))
    if not curves or max(len(c) for c in curves.values()) < 2:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, points in sorted(curves.items()):
        x, y = zip(*sorted(points))
        ax.plot(x, y, marker="o", label="SeqNet + CBGM" if name == "search_cbgm" else "SeqNet")
    ax.set_xscale("log")
    ax.set_xlabel("gallery size")
    ax.set_ylabel("mAP (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def top10_records(details, gallery_names):
    """Per protocol with a ranked list, per query: its AP, hits and the 10 best detections."""
    out = {}
    for key, d in details.items():
        if not isinstance(d, dict) or d["result"].get("top") is None:
            continue
        r, queries = d["result"], details["queries"]
        out[key] = [
            {
                "query": q["query"]["img_name"],
                "query_box": [float(v) for v in q["query"]["box"]],
                "ap": float(r["ap"][i]),
                "top1/5/10": [bool(h) for h in r["hits"][i]],
                "gt_occurrences": int(r["n_gt"][i]),
                "top10": [
                    {"img_name": gallery_names[img], "box": box, "score": s, "match": tp}
                    for img, box, s, tp in r["top"][i]
                ],
            }
            for i, q in enumerate(queries)
        ]
    return out
