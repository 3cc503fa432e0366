"""The search results as one static HTML page (relative links to thumbnails; no server)."""

import html

STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; background: #f4f4f4; color: #222; }
h1 { font-size: 20px; margin: 0 0 4px; }
.meta { color: #555; margin-bottom: 16px; font-size: 14px; }
.grid { display: flex; flex-wrap: wrap; gap: 14px; }
.card { background: #fff; border-radius: 6px; padding: 8px; box-shadow: 0 1px 3px #0003;
        width: 340px; font-size: 13px; }
.card img { display: block; max-width: 100%; border-radius: 3px; }
.card .crop { height: 160px; width: auto; max-width: 50%; object-fit: contain; float: right;
              margin-left: 8px; }
.card .full { clear: both; margin-top: 6px; }
.score { font-size: 18px; font-weight: 600; }
.query { border-left: 4px solid #3c8cff; }
.best { border-left: 4px solid #28c83c; }
.none { color: #a00; font-size: 15px; }
.strip img { display: inline-block; height: 64px; width: 32px; margin: 4px 2px 0 0; }
h3 { font-size: 14px; margin: 10px 0 6px; color: #444; }
"""


def _e(text):
    return html.escape(str(text), quote=True)


def page(query, matches, gallery, note=""):
    """The page's HTML text.

    ``query``: {"image", "box", "crop" (relative path of the crop thumbnail)}; ``matches``:
    results.json's match dicts with ``where`` (image or frame, as text), ``thumb`` and ``crop``
    (relative paths); ``gallery``: what was searched, as text.
    """
    cards = [
        f'<div class="card query"><img class="crop" src="{_e(query["crop"])}" alt="query">'
        f'<div class="score">query</div><div>{_e(query["image"])}</div>'
        f"<div>box {_e(' '.join(f'{v:g}' for v in query['box']))}</div></div>"
    ]
    for n, m in enumerate(matches):
        box = " ".join(f"{v:g}" for v in m["box"])
        cards.append(
            f'<div class="card{" best" if n == 0 else ""}">'
            f'<img class="crop" src="{_e(m["crop"])}" alt="match {n + 1}">'
            f'<div class="score">#{n + 1} &nbsp;{m["score"]:.3f}</div>'
            f"<div>{_e(m['where'])}</div><div>box {_e(box)}</div>"
            f"<div>detection {m['det_score']:.2f}</div>"
            f'<a href="{_e(m["thumb"])}"><img class="full" src="{_e(m["thumb"])}" '
            f'alt="{_e(m["where"])}"></a></div>'
        )
    empty = '<p class="none">No person was detected in the gallery.</p>' if not matches else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>seqnet search: {_e(query['image'])}</title><style>{STYLE}</style></head>\n"
        f"<body><h1>Person search: top {len(matches)}</h1>"
        f'<div class="meta">gallery {_e(gallery)}{_e(note)} · score = cosine similarity to the '
        f"query</div>{empty}\n"
        f'<div class="grid">\n' + "\n".join(cards) + "\n</div></body></html>\n"
    )


def _appearance_card(a, rank, is_video):
    """One appearance (with its pictures; None when none were drawn for it)."""
    if "thumb" not in a:
        return None
    best = a["best"]
    if is_video:
        when = (
            f"seen {a['start']:.2f}&ndash;{a['end']:.2f} s ({a['duration']:.1f} s, "
            f"{a['frames']} frames); best at {best['time']:.2f} s"
        )
    else:
        when = _e(a["image"])
    strip = "".join(f'<img src="{_e(s)}" alt="track">' for s in a["strip"])
    return (
        f'<div class="card best"><img class="crop" src="{_e(a["crop"])}" alt="appearance {rank}">'
        f'<div class="score">#{rank} &nbsp;{best["similarity"]:.3f}</div><div>{when}</div>'
        f'<div class="strip">{strip}</div>'
        f'<a href="{_e(a["thumb"])}"><img class="full" src="{_e(a["thumb"])}" '
        f'alt="appearance {rank}"></a></div>'
    )


def run_page(report, annotated):
    """``seqnet-run``'s page: per query its crop, its appearances (best crop, marked frame,
    time span, a strip of crops along the track), then its best frames, the timeline and a
    link to the annotated video. ``report``: matches.json's contents."""
    is_video = report["kind"] == "video"
    sections = []
    for q in report["queries"]:
        cards = [
            f'<div class="card query"><img class="crop" src="{_e(q["crop"])}" alt="query">'
            f'<div class="score">{_e(q["name"])}</div><div>{_e(q["image"])}</div></div>'
        ]
        seen = [_appearance_card(a, r, is_video) for r, a in enumerate(q["appearances"], 1)]
        shown = sum("thumb" in a for a in q["appearances"])
        more = len(q["appearances"]) - shown
        appearances = (
            f"<h3>{len(q['appearances'])} appearance{'s' * (len(q['appearances']) != 1)} at "
            f"similarity &ge; {report['threshold']:g}{f' ({more} not shown)' if more else ''}"
            f'</h3>\n<div class="grid">\n' + "\n".join(c for c in seen if c) + "\n</div>"
            "\n<h3>best frames</h3>"
        )
        for h in q["hits"]:
            where = f"frame {h['frame']} ({h['time']:.2f} s)" if is_video else _e(h["image"])
            above = h["similarity"] >= report["threshold"]
            cards.append(
                f'<div class="card{" best" if above else ""}">'
                f'<img class="crop" src="{_e(h["crop"])}" alt="hit {h["rank"]}">'
                f'<div class="score">#{h["rank"]} &nbsp;{h["similarity"]:.3f}</div>'
                f"<div>{where}</div><div>detection {h['det_score']:.2f}</div>"
                f'<a href="{_e(h["thumb"])}"><img class="full" src="{_e(h["thumb"])}" '
                f'alt="{where}"></a></div>'
            )
        if not q["hits"]:
            cards.append('<p class="none">No person was detected.</p>')
        sections.append(
            f'<h2>{_e(q["name"])}</h2>\n{appearances}\n<div class="grid">\n'
            + "\n".join(cards)
            + "\n</div>"
        )
    partial = ' · <b class="none">partial: stopped before the end</b>' if report["partial"] else ""
    video = ' · <a href="annotated.mp4">annotated video</a>' if annotated else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>seqnet-run: {_e(report['input'])}</title><style>{STYLE}"
        "h2 { font-size: 17px; margin: 22px 0 8px; } .timeline { max-width: 100%; }"
        "</style></head>\n"
        f"<body><h1>Person search in {_e(report['input'])}</h1>"
        f'<div class="meta">{report["frames"]} frames (one in {report["every"]}) · backend '
        f"{_e(report['backend'])} · threshold {report['threshold']:g} · score = cosine "
        f"similarity to the query{video}{partial}</div>\n"
        '<img class="timeline" src="timeline.png" alt="best similarity over time">\n'
        + "\n".join(sections)
        + "\n</body></html>\n"
    )
