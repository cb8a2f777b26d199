#!/usr/bin/env python
"""Read the paper's Whisper-base probe curves off its Fig. 4 (how ``probe.PAPER_FIG4_WHISPER_BASE``
was obtained; the paper and its repository publish no numbers).

The figure is taken from page 20 of the first author's Interspeech 2025 tutorial deck, which
reproduces Fig. 4 of Mohebbi et al. (EMNLP 2023) as an embedded PNG::

    git clone https://github.com/interpretingdl/speech-interpretability-tutorial   # @ de98b7c
    pip install pymupdf
    python scripts/digitise_fig4.py speech-interpretability-tutorial/book/interspeech2025/\\
        Interspeech2025_InterpretabilityTutorial_HoseinMohebbi_ContextMixing.pdf

Calibration (pixels of that 755 x 781 image): the encoder panel's x gridlines 0 ... 1 sit at columns
87.5 + 219 d (the decoder panel's at 335.5 + 219 d); y gridlines 1.0 ... 0.6 at rows 59 + 912.5 (1 - acc)
(major and minor white gridlines of the grey panel, found by colour). Whisper-base is ggplot's first
colour, #F8766D; its trained (solid) and random (dashed) curves are the upper and lower group of
that colour in the columns of depth (l - 1) / 5, l = 1..6 (the paper probes the outputs of layers
1-6; the curve's kinks sit at those depths). A point hidden under another model's curve is
reported as missing.
"""
from __future__ import annotations

import sys

PAGE, IMAGE = 19, 2  # 0-based: page 20, its third image
X0 = {"encoder": 87.5, "decoder": 335.5}
X_SPAN, Y_TOP, Y_PER_UNIT = 219.0, 59.0, 912.5
COLOUR = (248, 118, 109)  # ggplot's first hue: Whisper-base


def read_curves(png_bytes: bytes, n_layers: int = 6) -> dict:
    import io

    import numpy as np
    from PIL import Image

    im = np.asarray(Image.open(io.BytesIO(png_bytes)).convert("RGB")).astype(int)
    mask = np.abs(im - np.array(COLOUR)).sum(-1) < 90
    out = {}
    for comp, x0 in X0.items():
        tr, rd = [], []
        for k in range(n_layers):
            x = int(round(x0 + k / (n_layers - 1) * X_SPAN))
            rows = sorted(set(np.where(mask[41:482, x - 2 : x + 3].any(1))[0] + 41))
            groups = np.split(np.array(rows), np.where(np.diff(rows) > 3)[0] + 1) if rows else []
            vals = sorted((round(1 - (g.mean() - Y_TOP) / Y_PER_UNIT, 3) for g in groups if len(g)), reverse=True)
            if len(vals) >= 2:
                tr.append(vals[0])
                rd.append(vals[-1])
            else:  # one group: the other curve is hidden; the random one lies below 0.97 here
                tr.append(float("nan"))
                rd.append(vals[0] if vals else float("nan"))
        out[(comp, "trained")], out[(comp, "random")] = tuple(tr), tuple(rd)
    return out


def main(argv=None) -> int:
    import pymupdf

    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(__doc__)
        return 2
    doc = pymupdf.open(argv[0])
    xref = doc[PAGE].get_images(full=True)[IMAGE][0]
    curves = read_curves(doc.extract_image(xref)["image"])
    for key, vals in curves.items():
        print(key, tuple(float(v) for v in vals))
    return 0


if __name__ == "__main__":
    sys.exit(main())
