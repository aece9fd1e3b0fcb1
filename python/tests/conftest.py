"""Shared fixtures: the repository's built `odelt` command, its models and example workflows."""

from __future__ import annotations

import copy
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

import odelt

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models"
GENERATE = REPO / "examples" / "workflows" / "generate.json"


def odelt_bin() -> Path:
    p = Path(os.environ.get("ODELT_BIN", REPO / "target" / "release" / "odelt"))
    if not p.exists():
        pytest.skip(f"{p} is not built (cargo build --release)")
    return p


def clean_env() -> dict:
    env = dict(os.environ)
    env.pop("ODELT_PLUGIN_PATH", None)
    env.pop("ODELT_MODELS_DIR", None)
    return env


def read_png(path) -> np.ndarray:
    """Decodes an 8-bit RGB/RGBA/grey PNG (no interlace) into uint8 [H, W, C]: enough for odelt's SaveImage."""
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    pos, idat, w = 8, b"", None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and interlace == 0
            ch = {0: 1, 2: 3, 4: 2, 6: 4}[color]
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw = zlib.decompress(idat)
    stride = w * ch
    out = np.zeros((h, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.int32)
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = np.frombuffer(raw, dtype=np.uint8, count=stride, offset=y * (stride + 1) + 1).astype(np.int32)
        cur = np.zeros(stride, dtype=np.int32)
        for x in range(stride):
            a = cur[x - ch] if x >= ch else 0
            b = prev[x]
            c = prev[x - ch] if x >= ch else 0
            if f == 0:
                p = 0
            elif f == 1:
                p = a
            elif f == 2:
                p = b
            elif f == 3:
                p = (a + b) // 2
            else:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                p = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            cur[x] = (line[x] + p) & 0xFF
        out[y] = cur
        prev = cur
    return out.reshape(h, w, ch)


@pytest.fixture(scope="session")
def workflow() -> dict:
    return json.loads(GENERATE.read_text())


@pytest.fixture
def small(workflow) -> dict:
    """generate.json with 2 samples and 2 steps (fast)."""
    wf = copy.deepcopy(workflow)
    wf["3"]["inputs"]["batch_size"] = 2
    wf["4"]["inputs"]["class_labels"] = "0,1"
    wf["4"]["inputs"]["steps"] = 2
    return wf


@pytest.fixture(scope="session")
def host(tmp_path_factory) -> odelt.Host:
    out = tmp_path_factory.mktemp("out")
    return odelt.Host(models_dir=MODELS, output_dir=out, temp_dir=out / "temp", input_dir=out / "input")
