"""Generates the pickle fixtures in this folder (run once by hand; the Rust tests never need Python).

    python3 -m venv /tmp/pyenv && /tmp/pyenv/bin/pip install numpy ml_dtypes
    /tmp/pyenv/bin/python nodes/tests/data/pickle/gen_fixtures.py

Every fixture `<name>.pkl` comes with `<name>.expected.json`: each numpy array in the pickle by a '/'-joined key path
(its shape, dtype string and values in C order, as float64 or int), plus the plain values.
"""
import collections, json, os, pickle, sys, types

import ml_dtypes
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
rng = np.random.default_rng(0)

# A stand-in for the classes of a training library (so the pickles name an unknown module, as optax does).
fake = types.ModuleType("trainlib.state")
sys.modules["trainlib"] = types.ModuleType("trainlib")
sys.modules["trainlib.state"] = fake
AdamLike = collections.namedtuple("AdamLike", ["count", "mu", "nu"])
AdamLike.__module__ = "trainlib.state"
fake.AdamLike = AdamLike


class TrainState:
    pass


TrainState.__module__ = "trainlib.state"
TrainState.__qualname__ = "TrainState"
fake.TrainState = TrainState


def arrays():
    base = rng.standard_normal((2, 3, 4))
    return {
        "f32": base.astype(np.float32),
        "f64": base[0].astype(np.float64),
        "f16": base[1].astype(np.float16),
        "bf16": base[0, 0].astype(ml_dtypes.bfloat16),
        "f32_big_fortran": np.asfortranarray(base.astype(">f4")),
        "f64_fortran_2d": np.asfortranarray(base[1].T.astype(np.float64)),
        "i32": np.arange(-3, 3, dtype=np.int32).reshape(2, 3),
        "i64_big": np.arange(4, dtype=">i8"),
        "u8": np.arange(5, dtype=np.uint8),
        "bool": np.array([True, False, True]),
        "empty": np.zeros((0, 3), np.float32),
        "zero_d": np.array(2.5, np.float32),
        "scalar_f32": np.float32(1.25),
        "scalar_i64": np.int64(-9),
    }


def mixed():
    d = arrays()
    d["plain"] = {
        "none": None,
        "true": True,
        "int": -5,
        "big": 2**70 + 3,
        "float": 0.1,
        "str": "héllo",
        "bytes": b"\x00\xffab",
        "list": [1, [2, (3, 4)]],
        "tuple": (1, "x"),
        "set": {7},
        "frozenset": frozenset({8}),
        "odict": collections.OrderedDict([("b", 1), ("a", 2)]),
    }
    shared = {"w": np.ones(2, np.float32)}
    d["shared_a"] = shared
    d["shared_b"] = shared
    d["opt"] = AdamLike(np.int32(3), {"w": np.zeros(2, np.float32)}, {"w": np.full(2, 0.5, np.float32)})
    return d


def official(params_dtype):
    def tree(seed):
        r = np.random.default_rng(seed)
        return {
            "PatchEmbed_0": {"Conv_0": {"kernel": r.standard_normal((2, 2, 4, 8)).astype(params_dtype),
                                        "bias": r.standard_normal(8).astype(params_dtype)}},
            "DiTBlock_0": {"Dense_0": {"kernel": np.asfortranarray(r.standard_normal((8, 48))).astype(params_dtype),
                                       "bias": r.standard_normal(48).astype(params_dtype)},
                           "MlpBlock_0": {"Dense_0": {"kernel": r.standard_normal((8, 32)).astype(params_dtype)}}},
        }
    return tree


def flatten(v, prefix, out):
    if isinstance(v, dict):
        for k, c in v.items():
            flatten(c, f"{prefix}/{k}" if prefix else str(k), out)
    elif isinstance(v, AdamLike):
        for k in v._fields:
            flatten(getattr(v, k), f"{prefix}/{k}", out)
    elif isinstance(v, (np.ndarray, np.generic)):
        a = np.asarray(v)
        vals = a.astype(np.float64) if a.dtype.kind in "fV" or a.dtype == ml_dtypes.bfloat16 else a.astype(np.int64)
        out[prefix] = {"shape": list(a.shape), "dtype": str(a.dtype),
                       "values": [float(x) if isinstance(x, float) else int(x) for x in vals.ravel(order="C").tolist()]}


def write(name, obj, protocol, expected_tree):
    with open(os.path.join(HERE, f"{name}.pkl"), "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
    out = {}
    flatten(expected_tree, "", out)
    with open(os.path.join(HERE, f"{name}.expected.json"), "w") as f:
        json.dump(out, f, indent=0, sort_keys=True)


m = mixed()
for p in (2, 3, 4, 5):
    write(f"mixed_p{p}", m, p, m)

# Official-layout checkpoints in other dtypes / nestings.
t = official(np.float64)
ck = {"params": t(1), "params_ema": t(2), "opt_state": (AdamLike(np.int32(0), t(3), t(4)),), "step": np.int64(42),
      "_timestamp": 1.0}
write("official_f64", ck, 4, {"params": ck["params"], "params_ema": ck["params_ema"]})
tb = official(ml_dtypes.bfloat16)
ck = {"train_state": {"params": tb(5), "params_ema": tb(6), "step": 7}}
write("official_bf16_train_state", ck, 4, {"params": ck["train_state"]["params"],
                                            "params_ema": ck["train_state"]["params_ema"]})
ts = TrainState()
ts.params = t(8)
ts.params_ema = t(9)
ts.step = np.int32(11)
write("official_object_train_state", {"train_state": ts}, 2, {"params": ts.params, "params_ema": ts.params_ema})
print("ok")
