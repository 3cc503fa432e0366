"""The archive's own outputs: ``matches.json`` (each query's appearances and best hits across
every input, per-input counts, what was skipped and why) and ``index.html`` (the appearances
ranked, each input's timeline strip, links into each input's own page)."""

import html

from seqnet_runtime import fs
from seqnet_runtime.html import STYLE

FORMAT_VERSION = 1  # of the archive's matches.json
SHOWN = 20  # appearances per query on the archive page


def _e(text):
    return html.escape(str(text), quote=True)


def _under(folder, path):
    return f"{folder}/{path}" if path else path


def build(settings, items, reports, skipped, queries, topk):
    """The archive's matches.json contents from each input's report (``run.write_outputs``)."""
    done = [item for item in items if item.name in reports]
    report = {
        "version": FORMAT_VERSION,
        "kind": "archive",
        **settings,
        "inputs": [],
        "skipped": [{"input": str(i), "reason": r} for i, r in skipped],
        "queries": [],
    }
    for item in done:
        r, folder = reports[item.name], f"inputs/{item.name}"
        report["inputs"].append({
            "name": item.name, "path": r["input"], "folder": folder, "kind": r["kind"],
            "frames": r["frames"], "partial": r["partial"],
            "appearances": {q["name"]: len(q["appearances"]) for q in r["queries"]},
        })  # fmt: skip
    for n, q in enumerate(queries):
        seen, hits = [], []
        for item in done:
            folder, mine = f"inputs/{item.name}", reports[item.name]["queries"][n]
            for a in mine["appearances"]:
                entry = {"input": item.name, **a}
                for key in ("thumb", "crop"):
                    if key in a:
                        entry[key] = _under(folder, a[key])
                if "strip" in a:
                    entry["strip"] = [_under(folder, s) for s in a["strip"]]
                seen.append(entry)
            for h in mine["hits"]:
                hits.append({"input": item.name, **h, "thumb": _under(folder, h["thumb"]),
                             "crop": _under(folder, h["crop"])})  # fmt: skip
        seen.sort(key=lambda a: (-a["best"]["similarity"], a["input"], a["first"]))
        hits.sort(key=lambda h: (-h["similarity"], h["input"], h["rank"]))
        crop = f"inputs/{done[0].name}/thumbs/query_{n}.jpg" if done else None
        report["queries"].append({
            "name": q.name, "image": str(q.path), "crop": crop, "appearances": seen,
            "hits": hits[:topk],
        })  # fmt: skip
    return report


def page(report):
    """The archive's index.html."""
    sections = []
    for q in report["queries"]:
        rows = []
        for r, a in enumerate(q["appearances"][:SHOWN], 1):
            best = a["best"]
            when = (
                f"{a['start']:.2f}&ndash;{a['end']:.2f} s, best at {best['time']:.2f} s"
                if a.get("start") is not None
                else _e(a.get("image", ""))
            )
            picture = (
                f'<a href="{_e(a["thumb"])}"><img class="full" src="{_e(a["thumb"])}" '
                f'alt="appearance {r}"></a>'
                if "thumb" in a
                else ""
            )
            rows.append(
                f'<div class="card best"><div class="score">#{r} &nbsp;{best["similarity"]:.3f}'
                f'</div><div><a href="inputs/{_e(a["input"])}/index.html">{_e(a["input"])}</a>'
                f"</div><div>{when}</div>{picture}</div>"
            )
        total = len(q["appearances"])
        crop = f'<img class="crop" src="{_e(q["crop"])}" alt="query">' if q["crop"] else ""
        query = f'<div class="card query">{crop}<div class="score">{_e(q["name"])}</div></div>'
        sections.append(
            f"<h2>{_e(q['name'])}: {total} appearance{'s' * (total != 1)} in the archive</h2>"
            f'\n<div class="grid">\n{query}\n' + "\n".join(rows) + "\n</div>"
        )
    strips = "\n".join(
        f'<h3><a href="{_e(i["folder"])}/index.html">{_e(i["name"])}</a> &middot; {i["frames"]} '
        f"frames &middot; "
        + ", ".join(f"{_e(k)}: {v}" for k, v in i["appearances"].items())
        + f'</h3>\n<img class="timeline" src="{_e(i["folder"])}/timeline.png" alt="timeline">'
        for i in report["inputs"]
    )
    skipped = "".join(f"<li>{_e(s['input'])}: {_e(s['reason'])}</li>" for s in report["skipped"])
    skipped = f'<h2>Skipped</h2><ul class="none">{skipped}</ul>' if skipped else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>seqnet-run: archive of {len(report['inputs'])} inputs</title><style>{STYLE}"
        "h2 { font-size: 17px; margin: 22px 0 8px; } .timeline { max-width: 100%; }"
        "</style></head>\n"
        f"<body><h1>Person search in {len(report['inputs'])} inputs</h1>"
        f'<div class="meta">threshold {report["threshold"]:g} · one frame in {report["every"]} · '
        f"score = cosine similarity to the query</div>\n"
        + "\n".join(sections)
        + f"\n<h2>Inputs</h2>\n{strips}\n{skipped}\n</body></html>\n"
    )


def write(out, settings, items, reports, skipped, queries, topk):
    """Write matches.json and index.html into the archive folder ``out``; returns the report."""
    report = build(settings, items, reports, skipped, queries, topk)
    fs.write_json(out / "matches.json", report, indent=1)
    fs.write_text(out / "index.html", page(report))
    return report
