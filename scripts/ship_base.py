"""Ship the base-faces recipe's model as the demo's base: package data the sample site serves,
its sha256 and URL written into params.yaml (base.checkpoint, base.sha256).

    cd recipes/base-faces && dvc repro && cd ../.. && python scripts/ship_base.py

Only the networks go in (no optimiser state): the file is what `base.checkpoint` loads.
"""

import hashlib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from styleforge.model.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402

RECIPE_MODEL = ROOT / "recipes/base-faces/data/base/model.pt"
SHIPPED = ROOT / "styleforge/app/sample_site/models/base-faces-32.pt"
URL = "http://127.0.0.1:8765/models/base-faces-32.pt"


def main() -> int:
    ckpt = load_checkpoint(RECIPE_MODEL)
    save_checkpoint(SHIPPED, ckpt.config, ckpt.g, ckpt.d, ckpt.g_ema, step=ckpt.step, augment=ckpt.augment)
    digest = hashlib.sha256(SHIPPED.read_bytes()).hexdigest()
    params = ROOT / "params.yaml"
    text = params.read_text()
    base = text.index("\nbase:\n")
    section_end = text.find("\n\n", base + 1)
    section = text[base:section_end]
    section = re.sub(r"(\n  checkpoint: ).*", rf"\g<1>{URL}", section)
    section = re.sub(r"(\n  sha256: ).*", rf"\g<1>{digest}", section)
    params.write_text(text[:base] + section + text[section_end:])
    print(f"{SHIPPED.relative_to(ROOT)}: {SHIPPED.stat().st_size} bytes, sha256 {digest}; params.yaml base points at {URL}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
