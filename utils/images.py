"""How every image file is read: the one place that turns a file's bytes into the RGB picture a
person sees, used by stage 1, assign_images.py and the report's thumbnails alike.

  - EXIF orientation applied (a phone photo taken upright is upright);
  - 16- and 32-bit greyscale scaled to 8 bits (Pillow's convert("RGB") would clip them): 16-bit
    over 0..65535; 32-bit integers as 16-bit where their values fit in 16 bits (how Pillow holds
    many 16-bit files), else over 0..2^31 - 1; 32-bit floats over 0..1 (or 0..their maximum
    where it is above 1);
  - transparent pixels composited on white (RGBA, LA, a palette or colour with a transparent
    entry), as an image viewer shows them on a white page;
  - .heic/.heif through pillow-heif, .avif through Pillow;
  - at most `max_pixels` pixels decoded (--max-image-pixels, Pillow's own limit by default): a
    JPEG past it is decoded at 1/2, 1/4 or 1/8 of its size (Pillow's draft: the decoder's own
    downscaling, so memory stays bounded) when that brings it within the limit, and any other
    image past it is unreadable.
An ordinary 8-bit image without an orientation tag or transparency is read as before (Pillow's
convert("RGB")), to the same bits.

An image that cannot be read raises Unreadable with why, in words. An ImageReader reads a
dataset's rows: strictly (an unreadable image stops with a StageError naming it), or skipping
(stage 1, assign_images.py): an unreadable image gives a blank image and its reason, and the
row is left out after encoding (`read_rows` yields (image, label, why), why "" when it was read).
"""
import io
import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from utils.errors import StageError, add_number

try:  # .heic/.heif (phone photos): pillow-heif registers itself as a Pillow plugin
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF = True
except ImportError:
    HEIF = False

DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS  # Pillow's decompression-bomb limit (89,478,485 pixels)
ORIENTATION = 0x0112  # the EXIF tag
SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
DRAFT_SCALES = (2, 4, 8)  # what a JPEG decoder can downscale by


def add_image_args(parser):
    """--max-image-pixels, of the scripts that read images (stage 1, assign_images.py)."""
    add_number(parser, "--max-image-pixels", int, DEFAULT_MAX_PIXELS, low=1,
               help="decode at most this many pixels of an image: a larger JPEG is decoded at 1/2, 1/4 or 1/8 of its size, "
                    "any other larger image is skipped (default: Pillow's decompression-bomb limit)")


class Unreadable(Exception):
    """An image that cannot be read; str() says why."""


def _opened(source):
    """Image.open of a path or bytes, without Pillow's own decompression-bomb check (ours is
    `max_pixels`, applied before anything is decoded)."""
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        return Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source)
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def _within(image, max_pixels):
    """Keep the decoded image within `max_pixels`: a JPEG by its decoder's downscaling, else Unreadable."""
    width, height = image.size
    if width * height <= max_pixels:
        return
    if image.format == "JPEG":
        for scale in DRAFT_SCALES:
            if -(-width // scale) * -(-height // scale) <= max_pixels:
                image.draft(image.mode, (width // scale, height // scale))
                if image.size[0] * image.size[1] <= max_pixels:
                    return
    raise Unreadable(f"{width} x {height} = {width * height:,} pixels, past the limit of {max_pixels:,} (--max-image-pixels)")


def _eight_bit(image):
    """A 16- or 32-bit greyscale image as 8-bit greyscale, its range scaled (not clipped)."""
    values = np.asarray(image)
    if image.mode == "F":
        values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        top = max(1.0, float(values.max(initial=0.0)))
        return Image.fromarray(np.clip(np.rint(values * (255 / top)), 0, 255).astype(np.uint8), "L")
    values = np.clip(values.astype(np.int64), 0, None)
    top = 65535 if image.mode in SIXTEEN_BIT or values.max(initial=0) <= 65535 else 2 ** 31 - 1
    return Image.fromarray(((values * 255 + top // 2) // top).astype(np.uint8), "L")


def _has_transparency(image):
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def _on_white(image):
    """An image with transparency composited on white, as RGB (opaque pixels keep their bits)."""
    rgba = np.asarray(image.convert("RGBA"), dtype=np.uint16)
    alpha = rgba[..., 3:]
    rgb = (rgba[..., :3] * alpha + 255 * (255 - alpha) + 127) // 255
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def as_seen(image):
    """A loaded image as the RGB picture a person sees (orientation, bit depth, transparency)."""
    try:
        orientation = image.getexif().get(ORIENTATION, 1)
    except Exception:  # an EXIF block Pillow cannot parse: read as stored
        orientation = 1
    if orientation in range(2, 9):
        image = ImageOps.exif_transpose(image)
    if image.mode in SIXTEEN_BIT + ("I", "F"):
        image = _eight_bit(image)
    if _has_transparency(image):
        return _on_white(image)
    return image.convert("RGB")


def read_image(source, max_pixels=None):
    """The RGB image of a path or of bytes, as a person sees it (module docstring); None is a
    missing image. Raises Unreadable with why."""
    if source is None:
        raise Unreadable("no image")
    if isinstance(source, str) and source.lower().endswith((".heic", ".heif")) and not HEIF:
        raise Unreadable("reading .heic/.heif needs pillow-heif: pip install -r requirements.txt")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's warnings on odd metadata: the pixels are what counts
            with _opened(source) as image:
                _within(image, DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels)
                image.load()
                return as_seen(image)
    except Unreadable:
        raise
    except UnidentifiedImageError:
        size = os.path.getsize(source) if isinstance(source, str) and os.path.isfile(source) else len(source) if isinstance(source, bytes) else None
        raise Unreadable("an empty file" if size == 0 else "not an image Pillow can identify") from None
    except (OSError, SyntaxError, ValueError, EOFError, TypeError, MemoryError, Image.DecompressionBombError) as error:
        message = str(error).strip().splitlines()[0][:160] if str(error).strip() else ""
        raise Unreadable(f"{error.__class__.__name__}{': ' + message if message else ''}") from None


class ImageReader:
    """How a dataset reads its rows: `max_pixels` (None: Pillow's default limit) and whether an
    unreadable image is skipped (the row then comes with its reason) or stops the stage."""

    def __init__(self, max_pixels=None, skip=False):
        self.max_pixels, self.skip = max_pixels, skip

    def row(self, source, where, transform, label):
        """(image, label), or with `skip` (image, label, why): why is "" for an image that was read,
        else the reason, with a blank image in its place."""
        try:
            image = read_image(source, self.max_pixels)
        except Unreadable as error:
            if not self.skip:
                raise StageError(f"cannot read image {where} ({error}): remove or fix it") from None
            blank = Image.new("RGB", (8, 8))
            return (transform(blank) if transform else blank), label, str(error)
        image = transform(image) if transform else image
        return (image, label, "") if self.skip else (image, label)


def skipped_lines(skipped, limit=None):
    """One line per skipped file: `  <path>: <why>` (at most `limit`, then how many more)."""
    shown = skipped if limit is None else skipped[:limit]
    lines = [f"  {path}: {why}" for path, why in shown]
    if len(shown) < len(skipped):
        lines.append(f"  ... and {len(skipped) - len(shown)} more")
    return lines
