"""fw_images: the image files the image workloads take, and decoding one safely with Pillow.

Pillow is imported only when an image is decoded (the other workloads do not need it).
"""
from __future__ import annotations

import io
import warnings

from fw_errors import BadInput
from fw_inputs import read_bytes

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".tif", ".tiff", ".bmp", ".webp")


def open_image(path: str, *, draft: int | None = None, mode: str = "RGB"):
    """Decode an image safely with Pillow: first frame, EXIF orientation applied, converted to ``mode``
    (``RGB`` or ``L``; alpha composited on white; 16-bit scaled to 8-bit).  ``draft=N``: JPEGs are decoded at a
    reduced scale that keeps both sides >= N.  Every problem becomes BadInput; the decompression-bomb limit
    stays on and its warning (1x-2x the limit) counts as a failure too."""
    from PIL import Image, ImageOps  # optional dependency: only the image workloads need it

    data = read_bytes(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise BadInput("decompression-bomb", str(e)) from None
        except Image.UnidentifiedImageError:
            raise BadInput("not-an-image", "Pillow cannot identify this file") from None
        except Exception as e:  # noqa: BLE001 - any decoder failure is a property of the file
            raise BadInput("corrupt", f"{type(e).__name__}: {e}") from None
        try:
            if draft and img.format == "JPEG":
                img.draft("RGB" if img.mode not in ("CMYK", "L") else img.mode, (draft, draft))
            img.load()
            try:
                img = ImageOps.exif_transpose(img)
            except Exception:  # noqa: BLE001 - a broken EXIF block: keep the pixels as stored
                pass
            return to_mode(img, mode)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise BadInput("decompression-bomb", str(e)) from None
        except MemoryError:
            raise BadInput("too-large", "out of memory while decoding") from None
        except Exception as e:  # noqa: BLE001
            text = f"{type(e).__name__}: {e}"
            raise BadInput("truncated" if "truncated" in text.lower() else "corrupt", text) from None


def to_mode(img, mode: str = "RGB"):
    """Pillow image of any mode -> ``RGB`` or ``L`` (alpha on white, 16/32-bit and float scaled)."""
    from PIL import Image

    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        lo, hi = img.getextrema() if img.mode == "I" else (0, 65535)
        if img.mode == "I" and hi <= 255 and lo >= 0:
            img = img.convert("L")
        else:
            img = img.convert("I").point(lambda v: v * (1 / 256.0)).convert("L")
    elif img.mode == "F":
        lo, hi = img.getextrema()
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        img = img.point(lambda v: (v - lo) * scale).convert("L")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    if img.mode != mode:
        img = img.convert(mode)
    return img
