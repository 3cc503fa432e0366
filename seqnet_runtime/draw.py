"""Pictures of search results with PIL: boxes labelled with similarities, and summary strips."""

from PIL import Image, ImageDraw, ImageFont

BEST = (40, 200, 60)  # the best match: green, thick
OTHER = (255, 170, 40)  # every other detection: orange
QUERY = (60, 140, 255)  # the query person: blue
TEXT = (0, 0, 0)
CROP_HEIGHT = 256  # summary crops are scaled to this height
CROP_WIDTH = 192  # ... and at most this wide (wide boxes are scaled down to fit)
CAPTION = 44  # pixels under each summary crop for its caption
MIN_SIDE = 480  # smaller images are enlarged to this short side before drawing, so labels fit


def _font(image_size):
    """A scalable font sized to the image, so labels stay readable on large and small images."""
    return ImageFont.load_default(size=max(12, round(min(image_size) / 22)))


def _label(draw, box, text, colour, font):
    """``text`` on a ``colour`` tag at the box's top-left corner (inside when there is no room
    above)."""
    x1, y1 = box[0], box[1]
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    w, h = right - left + 6, bottom - top + 4
    y = y1 - h if y1 - h >= 0 else y1
    draw.rectangle([x1, y, x1 + w, y + h], fill=colour)
    draw.text((x1 + 3 - left, y + 2 - top), text, fill=TEXT, font=font)


def _enlarged(image, boxes):
    """``image`` (a copy) and ``boxes`` scaled up together when the image is small."""
    scale = max(1.0, MIN_SIDE / min(image.size))
    if scale == 1.0:
        return image.copy(), [[float(v) for v in b] for b in boxes]
    size = (round(image.width * scale), round(image.height * scale))
    return image.resize(size, Image.BILINEAR), [[float(v) * scale for v in b] for b in boxes]


def detections(image, boxes, sims, best=None):
    """A copy of ``image`` with every box (N, 4 x1y1x2y2) labelled with its similarity; box
    ``best`` (an index) highlighted. Drawn low to high so the best ends up on top."""
    out, boxes = _enlarged(image, boxes)
    draw = ImageDraw.Draw(out)
    font = _font(out.size)
    width = max(2, min(out.size) // 160)
    for j in sorted(range(len(boxes)), key=lambda j: float(sims[j])):
        colour = BEST if j == best else OTHER
        box = boxes[j]
        draw.rectangle(box, outline=colour, width=2 * width if j == best else width)
        text = f"best {float(sims[j]):.2f}" if j == best else f"{float(sims[j]):.2f}"
        _label(draw, box, text, colour, font)
    return out


def marked(image, box, text, colour=BEST):
    """A copy of ``image`` with one labelled box (query or match, for thumbnails)."""
    out, (box,) = _enlarged(image, [box])
    draw = ImageDraw.Draw(out)
    draw.rectangle(box, outline=colour, width=max(2, min(out.size) // 100))
    _label(draw, box, text, colour, _font(out.size))
    return out


def crop(image, box):
    """The ``box`` region of ``image`` scaled to fit CROP_WIDTH x CROP_HEIGHT (aspect kept)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    region = image.crop(
        (round(x1), round(y1), max(round(x2), round(x1) + 1), max(round(y2), round(y1) + 1))
    )
    scale = min(CROP_HEIGHT / region.height, CROP_WIDTH / region.width)
    size = (max(1, round(region.width * scale)), max(1, round(region.height * scale)))
    return region.resize(size, Image.BILINEAR)


def _fit(draw, text, font, width):
    """``text`` shortened from the left (file names differ at the end) to fit ``width``."""
    while len(text) > 1 and draw.textlength(text, font=font) > width:
        text = "…" + text[2:]
    return text


def summary(query, matches):
    """One strip: the query crop (blue frame), a gap, then the match crops best first (green
    frame for the best), each captioned. ``query``: PIL crop; ``matches``: [(crop, caption)].
    Crops come from ``crop`` (at most CROP_WIDTH x CROP_HEIGHT)."""
    items = [(query, "query", QUERY)] + [
        (im, cap, BEST if n == 0 else OTHER) for n, (im, cap) in enumerate(matches)
    ]
    pad, gap = 10, 24
    font = ImageFont.load_default(size=15)
    width = len(items) * (CROP_WIDTH + pad) + pad + (gap if matches else 0)
    canvas = Image.new("RGB", (width, CROP_HEIGHT + CAPTION + 2 * pad), "white")
    draw = ImageDraw.Draw(canvas)
    x = pad
    for n, (im, cap, colour) in enumerate(items):
        left, top = x + (CROP_WIDTH - im.width) // 2, pad + (CROP_HEIGHT - im.height) // 2
        canvas.paste(im, (left, top))
        frame = [left - 2, top - 2, left + im.width + 1, top + im.height + 1]
        draw.rectangle(frame, outline=colour, width=3)
        cap = "\n".join(_fit(draw, line, font, CROP_WIDTH) for line in cap.splitlines())
        draw.multiline_text((x, pad + CROP_HEIGHT + 6), cap, fill=TEXT, font=font, spacing=2)
        x += CROP_WIDTH + pad + (gap if n == 0 else 0)
    return canvas


PALETTE = [(40, 200, 60), (60, 140, 255), (230, 60, 200), (250, 220, 40), (0, 210, 210)]


def query_colour(n):
    """The colour of query ``n`` in frames, the timeline and the page."""
    return PALETTE[n % len(PALETTE)]


def frame(image, boxes, labels):
    """A copy of the frame ``image`` (PIL) at its own size with every detection box (thin,
    orange) and ``labels`` ``[(box index, text, colour)]`` drawn thick and tagged on top."""
    out = image.copy()
    draw = ImageDraw.Draw(out)
    width = max(1, min(out.size) // 240)
    for box in boxes:
        draw.rectangle([float(v) for v in box], outline=OTHER, width=width)
    font = _font(out.size)
    for j, text, colour in labels:
        box = [float(v) for v in boxes[j]]
        draw.rectangle(box, outline=colour, width=3 * width)
        _label(draw, box, text, colour, font)
    return out
