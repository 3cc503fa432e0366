"""Demo pictures: every detection in a few gallery images, labelled with its similarity to a
query, and a summary strip of the best matches, on any backend's session.

Writes one ``NN_<name>.png`` per gallery image and ``summary.png`` to the output folder, all or
nothing.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

from seqnet_runtime import draw, fs
from seqnet_runtime.errors import SeqNetError
from seqnet_runtime.gallery import ImageGallery
from seqnet_runtime.images import check_box, read_pil, to_array
from seqnet_runtime.stream import Query, search_pass

log = logging.getLogger(__name__)


@dataclass
class Demo:
    """A demo's inputs, every one validated (see ``prepare``)."""

    query_image: object  # PIL image
    box: object  # (4,) float32 array
    paths: list
    gallery: list  # PIL images
    out: Path
    topk: int


def prepare(query, box, gallery, out, topk=5):
    """Read and check every input before any model loads: each problem is one SeqNetError."""
    if topk < 1:
        raise SeqNetError(f"--topk must be 1 or more, got {topk}")
    out = Path(out)
    fs.check_out(out, ["summary.png"])
    query_image = read_pil(query)
    box = check_box(box, *query_image.size)
    return Demo(query_image, box, list(gallery), [read_pil(p) for p in gallery], out, topk)


def demo(session, job):
    """Detect with ``session`` in the search pass, then draw every gallery image and the
    summary strip."""
    query = Query("query", None, job.query_image, job.box)
    query.embedding = session.embed(to_array(job.query_image), job.box[None])[0]
    gallery, found = ImageGallery(job.paths), {}
    result = search_pass(
        session, gallery, [query], {}, batch=session.batch_size,
        on_frame=lambda unit, frame, array, dets, sims: found.setdefault(unit, dets),
    )  # fmt: skip
    if result.partial:
        raise KeyboardInterrupt
    dets = [found[str(Path(p).resolve())] for p in job.paths]
    query = query.embedding
    matches = []  # (similarity, gallery index, box)
    with fs.atomic_dir(job.out) as tmp:
        for n, (path, image, det) in enumerate(zip(job.paths, job.gallery, dets, strict=True)):
            sims = det["embeddings"] @ query
            best = int(sims.argmax()) if len(sims) else None
            name = f"{n:02d}_{Path(path).stem}.png"
            draw.detections(image, det["boxes"], sims, best).save(tmp / name)
            matches += [(float(s), n, b) for s, b in zip(sims, det["boxes"])]
            log.info(
                "%s: %d people, best similarity %s",
                Path(path).name,
                len(sims),
                f"{float(sims[best]):.3f}" if best is not None else "-",
            )
        top = sorted(matches, key=lambda m: -m[0])[: job.topk]
        crops = [
            (draw.crop(job.gallery[n], b), f"#{r} {s:.2f}\n{Path(job.paths[n]).name}")
            for r, (s, n, b) in enumerate(top, 1)
        ]
        draw.summary(draw.crop(job.query_image, job.box), crops).save(tmp / "summary.png")
    log.info("wrote %d images and summary.png to %s", len(job.gallery), job.out)
