"""Training-time transforms on (image, target) pairs; boxes move with the pixels."""


def hflip(image, target):
    """Mirror a C x H x W image and its x1y1x2y2 boxes left-right."""
    width = image.shape[-1]
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
    return image.flip(-1), {**target, "boxes": boxes}
