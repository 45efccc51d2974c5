"""Writes the model card (`__metadata__["dnvs"]`) into a localisation model trained before the
engine wrote cards. Usage: python3 add_localize_card.py IN.safetensors OUT.safetensors CONFIG.json
[val Dice]. The numbers are those of `pipeline::localize::cardless_overrides` (U-Net, 4 mm grid,
HU window [-1000, 2000] -> [-1, 1]); the tensors are copied byte for byte."""
import hashlib, json, re, struct, sys

src, dst, config = sys.argv[1], sys.argv[2], sys.argv[3]
dice = float(sys.argv[4]) if len(sys.argv) > 4 else None
raw = open(src, "rb").read()
(n,) = struct.unpack("<Q", raw[:8])
header = json.loads(raw[8:8 + n])
body = raw[8 + n:]
width = header["encoders.0.basic_module.SingleConv2.conv.weight"]["shape"][0] \
    if "encoders.0.basic_module.SingleConv2.conv.weight" in header else 8
cfg_bytes = open(config, "rb").read()
cfg = json.loads(cfg_bytes)
card = {
    "format": 1, "arch": "unet", "width": width, "target": "joints", "classes": 2,
    "spacing_mm": [4.0, 4.0, 4.0],
    "normalization": {"kind": "ct", "lo": -1000.0, "hi": 2000.0, "mean": 500.0, "std": 1500.0},
    "patch": cfg["loaders"]["train_patch"], "window": [48, 64, 64],
    "config_sha256": hashlib.sha256(cfg_bytes).hexdigest(),
    "dataset": "heads", "seed": cfg["manual_seed"], "train_cases": [], "val_cases": [],
    "dice": dice, "hd95_mm": None, "engine_version": "0.1.0",
}
meta = dict(header.get("__metadata__", {}))
meta["dnvs"] = json.dumps(card, separators=(",", ":"))
header["__metadata__"] = meta
h = json.dumps(header, separators=(",", ":")).encode()
h += b" " * (-len(h) % 8)
with open(dst + ".tmp", "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + body)
import os
os.replace(dst + ".tmp", dst)
print(json.dumps(card))
