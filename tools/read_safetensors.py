#!/usr/bin/env python3
"""Reads a safetensors file by the format's specification with NumPy only (no torch, no safetensors package)
and prints its tensors as JSON: {name: {"dtype", "shape", "values" (flat, C order)}, "__metadata__": {...}}.
Usage: read_safetensors.py FILE"""
import json
import struct
import sys

import numpy as np

DTYPES = {"F64": "<f8", "F32": "<f4", "I64": "<i8"}


def read(path):
    with open(path, "rb") as f:
        data = f.read()
    (header_length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + header_length])
    base = 8 + header_length
    out = {"__metadata__": header.pop("__metadata__", {})}
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        array = np.frombuffer(data[base + begin:base + end], dtype=DTYPES[entry["dtype"]]).reshape(entry["shape"])
        out[name] = {"dtype": entry["dtype"], "shape": list(array.shape), "values": array.ravel().tolist()}
    return out


if __name__ == "__main__":
    json.dump(read(sys.argv[1]), sys.stdout)
