"""``seqnet convert``: CUHK-SYSU or PRW into our JSON format (train, gallery and queries).

CUHK-SYSU queries keep their TestG50 gallery lists and get their true identity (q + 1) instead of
the established loaders' dummy; PRW queries keep an implicit gallery and their camera.
"""

import logging
from pathlib import Path

from seqnet_train.data import cuhk_sysu, json_format, prw
from seqnet_train.errors import SeqNetError

log = logging.getLogger(__name__)

FORMATS = {"cuhk-sysu": cuhk_sysu, "prw": prw}


def convert(fmt, root, out):
    """Write the dataset at ``root`` (format ``fmt``) as a JSON file ``out``; return its path."""
    if fmt not in FORMATS:
        raise SeqNetError(f"unknown format {fmt!r}; expected one of {sorted(FORMATS)}")
    module = FORMATS[fmt]
    images = [(r, split) for split in json_format.SPLITS for r in module.load_split(root, split)]
    queries = module.load_protocol(root, 50) if fmt == "cuhk-sysu" else module.load_queries(root)
    names = {r["img_name"] for r, _ in images}
    missing = [q["query"]["img_name"] for q in queries if q["query"]["img_name"] not in names]
    if missing:
        raise SeqNetError(f"{root}: query image {missing[0]} is in no train or gallery image list")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    json_format.write(out, images, queries)
    log.info("wrote %d images and %d queries to %s", len(images), len(queries), out)
    return out


def run(args):
    """CLI entry: ``seqnet convert --format cuhk-sysu|prw --root DIR --out FILE.json``."""
    convert(args.format, args.root, args.out)
