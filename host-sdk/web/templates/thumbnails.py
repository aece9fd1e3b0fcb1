"""Makes the template thumbnails NAME-1.png from the examples' own output.

    for w in generate same_seed_every_length img2img_denoise; do
        target/release/odelt run examples/workflows/$w.json --output-dir /tmp/thumbs -q
    done
    python3 host-sdk/web/templates/thumbnails.py /tmp/thumbs/fashion host-sdk/web/templates

Each thumbnail is 256 x 256: the 28 x 28 samples scaled up (nearest) on a dark background.
Needs Pillow.
"""
import sys
from pathlib import Path

from PIL import Image

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
BG = (30, 31, 34)


def tiles(prefix, n):
    return [Image.open(src / f"{prefix}_{i:05d}_.png").convert("RGB") for i in range(1, n + 1)]


def sheet(rows, name, tile):
    """rows: lists of images; each row centred, the block centred on a 256 x 256 canvas."""
    gap = 6
    canvas = Image.new("RGB", (256, 256), BG)
    height = len(rows) * tile + (len(rows) - 1) * gap
    y = (256 - height) // 2
    for row in rows:
        width = len(row) * tile + (len(row) - 1) * gap
        x = (256 - width) // 2
        for im in row:
            canvas.paste(im.resize((tile, tile), Image.NEAREST), (x, y))
            x += tile + gap
        y += tile + gap
    canvas.save(dst / f"{name}-1.png", optimize=True)


g = tiles("generate", 10)
sheet([g[0:3], g[3:6], g[6:9]], "generate", 76)
sheet([tiles(f"length_{l}", 3) for l in (2, 4, 6)], "same_seed_every_length", 76)
sheet([tiles("img2img_source", 3), tiles("img2img_result", 3)], "img2img_denoise", 76)
