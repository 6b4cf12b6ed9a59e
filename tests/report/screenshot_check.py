"""Is a screenshot of report.html more than a blank page? (`make report-render`)

Prints its size, the fraction of pixels that are not near-white and the number of
distinct colours; exits 1 below the thresholds (a page that failed to render, or
rendered without its images, is nearly all white with few colours)."""

from __future__ import annotations

import sys

import numpy as np
from PIL import Image

MIN_NON_WHITE = 0.03
MIN_COLOURS = 64


def main(path: str) -> int:
    image = np.asarray(Image.open(path).convert("RGB"))
    height, width = image.shape[:2]
    non_white = float((image.min(axis=2) < 245).mean())
    colours = len(np.unique(image.reshape(-1, 3), axis=0))
    print(f"screenshot {path}: {width}x{height} px, non-white fraction {non_white:.4f}, "
          f"{colours} distinct colours")
    if non_white < MIN_NON_WHITE or colours < MIN_COLOURS:
        print(f"BLANK: needs non-white >= {MIN_NON_WHITE} and >= {MIN_COLOURS} colours")
        return 1
    print("not blank")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
