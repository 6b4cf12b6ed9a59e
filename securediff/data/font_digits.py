"""Font digits: public images of 0-9 rendered from fonts that ship with matplotlib.

They hold no one's records, so pretraining on them costs no privacy: a public
starting point that private training then only has to adapt. Rendering is
local (matplotlib's TrueType files, drawn with PIL): nothing is downloaded.

Each image is one glyph drawn large, moved by small random augmentations
(shift, scale, rotation, stroke width; the ranges are fixed here and drawn from
an injected generator), cropped to its ink, fitted into the target box as the
private data's digits are, and downsampled. Grey only: colour (the client's
tint) is applied by whoever needs it, as colored-digits does.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from securediff.data.datasets import DIGIT_CLASSES, Dataset
from securediff.errors import DataError

# Text fonts only: matplotlib also ships symbol fonts (STIXSize*, cmex10, cmsy10)
# whose code points 0-9 are not digits, and "Display" cuts with too few glyphs.
_TEXT_FONTS = re.compile(r"^(DejaVu(Sans|Serif|SansMono)(-[A-Za-z]+)?|STIXGeneral[A-Za-z]*|cm(r|b|ss|tt|ti)10)\.ttf$")
_CANVAS = 96  # draw large, then downsample: thin strokes survive as grey levels
_GLYPH_PX = 64
# Augmentation ranges (fixed: provenance records them with the fonts).
AUGMENTATIONS = {
    "shift_fraction": 0.08,  # of the target size, uniform in [-s, s] per axis
    "scale": (0.8, 1.0),  # fraction of the box the digit's larger side fills
    "rotation_degrees": 12.0,  # uniform in [-r, r]
    "stroke_width_px": (0, 3),  # extra stroke at the 64 px glyph size, integer in [lo, hi]
}
# Fraction of the image the digit's box fills: sklearn's 8x8 digits fill the
# frame; MNIST fits digits in a 20x20 box of its 28x28 frame.
_FILL = {8: 1.0, 28: 20 / 28}


def font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def font_files() -> list[Path]:
    """The fonts used, in a fixed order (sorted by name)."""
    files = sorted(p for p in font_dir().glob("*.ttf") if _TEXT_FONTS.match(p.name))
    if not files:
        raise DataError(f"no text fonts found under {font_dir()} (matplotlib's fonts are needed)")
    return files


def provenance(*, size: int, channels: int, per_class: int) -> dict[str, Any]:
    """What a run's manifest records about the public data it pretrained on."""
    import matplotlib

    return {"dataset": "font-digits", "fonts": [p.name for p in font_files()],
            "font_source": f"matplotlib {matplotlib.__version__} mpl-data/fonts/ttf",
            "augmentations": {k: list(v) if isinstance(v, tuple) else v for k, v in AUGMENTATIONS.items()},
            "size": size, "channels": channels, "per_class": per_class,
            "colour": "grey (the client's tint, where the dataset has one, is applied afterwards)"}


def _render(font, digit: str, rng: np.random.Generator, size: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    stroke = int(rng.integers(AUGMENTATIONS["stroke_width_px"][0], AUGMENTATIONS["stroke_width_px"][1] + 1))
    canvas = Image.new("L", (_CANVAS, _CANVAS), 0)
    ImageDraw.Draw(canvas).text((_CANVAS / 2, _CANVAS / 2), digit, fill=255, font=font, anchor="mm",
                                stroke_width=stroke, stroke_fill=255)
    angle = float(rng.uniform(-1, 1)) * AUGMENTATIONS["rotation_degrees"]
    canvas = canvas.rotate(angle, resample=Image.BILINEAR)
    box = canvas.getbbox()
    if box is None:
        raise DataError(f"font {getattr(font, 'path', font)} has no glyph for {digit!r}")
    glyph = canvas.crop(box)
    # Scale the larger side into the fill box; keep the aspect ratio.
    lo, hi = AUGMENTATIONS["scale"]
    side = _FILL.get(size, 20 / 28) * float(rng.uniform(lo, hi)) * _CANVAS
    w, h = glyph.size
    factor = side / max(w, h)
    glyph = glyph.resize((max(1, round(w * factor)), max(1, round(h * factor))), Image.LANCZOS)
    frame = Image.new("L", (_CANVAS, _CANVAS), 0)
    shift = AUGMENTATIONS["shift_fraction"] * _CANVAS
    dx, dy = (float(v) * shift for v in rng.uniform(-1, 1, size=2))
    frame.paste(glyph, (round((_CANVAS - glyph.size[0]) / 2 + dx), round((_CANVAS - glyph.size[1]) / 2 + dy)))
    small = frame.resize((size, size), Image.BOX)  # area average: ink coverage per pixel
    return np.asarray(small, dtype=np.float32) / np.float32(255.0)


def render_font_digits(*, size: int, channels: int, per_class: int, generator: np.random.Generator) -> Dataset:
    """`per_class` images of each digit 0-9, (N, channels, size, size) in [-1, 1],
    fonts taken in turn and augmentations drawn from `generator`."""
    from PIL import ImageFont

    if size < 4 or channels not in (1, 3) or per_class < 1:
        raise DataError(f"font-digits renders size >= 4, 1 or 3 channels, per_class >= 1 "
                        f"(not {size}, {channels}, {per_class})")
    fonts = [ImageFont.truetype(str(p), _GLYPH_PX) for p in font_files()]
    images = np.empty((10 * per_class, size, size), dtype=np.float32)
    labels = np.repeat(np.arange(10, dtype=np.int64), per_class)
    for i, label in enumerate(labels):
        images[i] = _render(fonts[i % len(fonts)], str(label), generator, size)
    # Intensity -> [-1, 1] with the peak at 1, as the private digits' 0..16 scale.
    peak = images.reshape(len(images), -1).max(axis=1)[:, None, None]
    scaled = images / np.maximum(peak, np.float32(1e-6)) * np.float32(2.0) - np.float32(1.0)
    stacked = np.repeat(scaled[:, None], channels, axis=1)
    return Dataset(name="font-digits", images=np.clip(stacked, -1.0, 1.0).astype(np.float32),
                   labels=labels, num_classes=10, class_names=DIGIT_CLASSES)
