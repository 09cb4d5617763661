"""edges: edge map of every image under --src (a second stage, usually over the output of resize), PNG output.

Each image ``SRC/a/b.jpg`` becomes ``DST/a/b.png``: a grayscale (mode L) image of the same size, white edges
on black.  ``--method canny`` (default) uses OpenCV's Canny detector with --low/--high thresholds after a
small Gaussian blur; ``--method pil`` uses Pillow's FIND_EDGES filter (no OpenCV needed).  Inputs are decoded
with the same checks as resize (bad files are recorded failures, EXIF orientation applied).
"""
from __future__ import annotations

import io
import os
import sys

import fleetwork


def edge_map(path: str, method: str = "canny", low: int = 100, high: int = 200, max_side: int = 0):
    """One image file -> Pillow 'L' image of its edges (BadInput when the file is bad)."""
    from PIL import Image, ImageFilter

    img = fleetwork.open_image(path, draft=max_side or None, mode="L")
    if max_side and max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    if method == "pil":
        return img.filter(ImageFilter.FIND_EDGES)
    import cv2
    import numpy as np

    gray = np.asarray(img)
    gray = cv2.GaussianBlur(gray, (3, 3), 0)
    return Image.fromarray(cv2.Canny(gray, low, high), "L")


class Edges(fleetwork.FileWorkload):
    name = "edges"
    description = __doc__
    epilog = "example:\n  python workloads/edges.py --src data/out --dst data/edges --method canny"
    extensions = fleetwork.IMAGE_EXTENSIONS
    out_ext = ".png"

    def add_arguments(self, parser):
        parser.add_argument("--method", choices=("canny", "pil"), default="canny",
                            help="canny (OpenCV, default) or pil (Pillow FIND_EDGES)")
        parser.add_argument("--low", type=int, default=100, help="Canny lower hysteresis threshold (100)")
        parser.add_argument("--high", type=int, default=200, help="Canny upper hysteresis threshold (200)")
        parser.add_argument("--max-side", type=int, default=0,
                            help="shrink inputs whose longer side exceeds this first (0 = keep the size)")

    def setup_worker(self, opts):
        if opts.method == "canny":
            import cv2

            cv2.setNumThreads(1)        # the pool already uses every core

    def process(self, item, src, dst, opts):
        edges = edge_map(os.path.join(src, item), opts.method, opts.low, opts.high, opts.max_side)
        buf = io.BytesIO()
        edges.save(buf, "PNG", optimize=False)
        fleetwork.atomic_write(os.path.join(dst, self.output_for(item, opts)), buf.getvalue())


WORKLOAD = Edges()

if __name__ == "__main__":
    sys.exit(fleetwork.main(WORKLOAD))
