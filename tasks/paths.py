"""Where each stage writes, named once: the stages, the run's page and the flows read these, and
tests/test_deps.py holds them against dvc.yaml (the other place a path is said). Relative to the
project root. Paths users choose (base.dataset, finetune.dataset, portraits.photos, portraits.look)
are params instead. Imports nothing heavy: the page reads these without loading torch."""

from pathlib import Path

from styleforge.core.reports import REPORTS_DIR  # reports/<stage>.json

# scrape
RAW_DIR = Path("data/raw")  # the images, named by sha256
MANIFEST = RAW_DIR / "manifest.parquet"  # every URL tried: what a rerun resumes from
# faces
FACES_DIR = Path("data/faces")
FACES_CACHE = Path("data/cache/faces")
FACES_SHEET = REPORTS_DIR / "faces.png"
REJECTS_SHEET = REPORTS_DIR / "faces_rejects.png"
# augment
TRAIN_DIR = Path("data/train")
AUGMENT_SHEET = REPORTS_DIR / "augment.png"
# base
BASE_MODEL = Path("data/base/model.pt")
BASE_CHECKPOINTS = Path("data/base_ckpt")
BASE_LIVE = Path("dvclive/base")
BASE_SAMPLES = REPORTS_DIR / "base_samples.png"
# finetune
FINETUNED_MODEL = Path("data/finetune/model.pt")
FINETUNE_CHECKPOINTS = Path("data/finetune_ckpt")
FINETUNE_LIVE = Path("dvclive/finetune")
FINETUNE_SAMPLES = REPORTS_DIR / "finetune_samples.png"
COMPARISON = REPORTS_DIR / "finetune_vs_base.png"
# blend
BLEND_DIR = Path("data/blend")
BLEND_MODEL = BLEND_DIR / "model.pt"
SEFA_FILE = BLEND_DIR / "sefa.npz"
SWEEP_SHEET = REPORTS_DIR / "blend_sweep.png"
# portraits
PORTRAITS_DIR = Path("data/portraits")
PORTRAITS_SHEET = REPORTS_DIR / "portraits.png"
# evaluate
# samples.png, pca_real.csv, pca_generated.csv: a cached DVC output, pushed with each release so
# that `dvc plots diff TAG1 TAG2` can set any two nights side by side
EVALUATE_PLOTS = REPORTS_DIR / "evaluate"
EVALUATE_SAMPLES = EVALUATE_PLOTS / "samples.png"
# walk
VIDEOS = REPORTS_DIR / "videos"
