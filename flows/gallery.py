"""The gallery: reports/index.html shows one run on one page; reports/history.html lists every
nightly release, each with a link to that night's page.

The run page: the dataset (the stage reports' counts, the crops and rejects sheets), training
curves (inline SVG drawn here by matplotlib from the DVCLive TSVs), base vs fine-tuned, the blend
sweep with the chosen cut outlined, the portraits, SeFa edits, snapshots, the walk stage's videos,
metrics beside the previous release's and the params changed since. A section whose inputs are
missing says so in one line: a run that stopped early still gets its page.

Self-contained and offline: style inlined, no script, and every picture or video referenced by a
relative URL inside the page's folder, so a page opens from the file system or from any HTTP
server serving that folder and asks nothing of anywhere else. A file already in the page's
folder (reports/*.png for reports/index.html) is shown where it lies; one from elsewhere (the
per-photo portraits in data/portraits/, snapshot grids in data/finetune_ckpt/) is copied into
`<page stem>_files/` beside the page, at its path in the project.

How a night's page stays with its release: the release commits it to git, as
reports/releases/<tag>/index.html with its pictures in index_files/, in the commit its tag
points at. So `git checkout TAG` brings that night's page back (and `dvc pull` its data, as
before), and history.html, written at HEAD, links every night's page as a file beside it: the
folders of releases in HEAD's history are in the tree, and a tag's folder that is not (a tag on
another branch) is restored from git when the history is written. Tracking the pages with DVC
instead would put each one behind a `dvc pull` at its own tag, out of reach of one history page.
Git's cost is the repository's size, so a release keeps small copies: pictures shrunk to at most
RELEASE_COPIES.max_width pixels wide and stored as the smaller of PNG and JPEG, and videos only up to
RELEASE_COPIES.video_bytes; a bigger one is left to DVC (the walk stage's reports/videos/ is a
cached output, pushed with the release), and the page says so.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

import yaml
from markupsafe import Markup
from PIL import Image

from styleforge.core.io import atomic_write, atomic_write_bytes
from styleforge.core.reports import REPORTS_DIR, read_report, report_path
from styleforge.flows.gallery_html import STYLE, templates
from styleforge.flows.release import METRICS_FILE, TAG_PREFIX, Release, ReleaseError, file_at, git, last_release
from styleforge.tasks.paths import (
    AUGMENT_SHEET,
    BASE_LIVE,
    BASE_SAMPLES,
    BLEND_MODEL,
    COMPARISON,
    EVALUATE_SAMPLES,
    FACES_SHEET,
    FINETUNE_CHECKPOINTS,
    FINETUNE_LIVE,
    FINETUNE_SAMPLES,
    PORTRAITS_DIR,
    PORTRAITS_SHEET,
    REJECTS_SHEET,
    SEFA_FILE,
    SWEEP_SHEET,
)

PAGE = REPORTS_DIR / "index.html"
HISTORY = REPORTS_DIR / "history.html"
RELEASES_DIR = REPORTS_DIR / "releases"  # <tag>/index.html: each night's page, committed with its release
NIGHTLY_SUMMARY = REPORTS_DIR / "nightly.json"

LIVE_DIRS = {"base": BASE_LIVE, "finetune": FINETUNE_LIVE}
# the grid README's `styleforge edit` example writes; the page renders it when it is missing or stale
EDIT_GRID = REPORTS_DIR / "edit.png"
EDIT_SEEDS, EDIT_DIRECTIONS, EDIT_DEGREE = "0,1", 3, 5.0
DATASET_STAGES = ("scrape", "faces", "augment")

# Training curves: one small chart each, DVCLive metric names (model/train.py's stats, tasks/training.py's groups)
CURVES = (
    ("G and D loss", ("train/loss_g", "train/loss_d")),
    ("R1", ("train/r1",)),
    ("path length", ("train/pl",)),
    ("ADA p", ("train/ada_p",)),
    ("s/kimg", ("speed/sec_per_kimg",)),
)
# history.html's thumbnail row: these pictures of each night's page, in this order
THUMBNAILS = (FINETUNE_SAMPLES, SWEEP_SHEET, PORTRAITS_SHEET)
MODEL_METRICS = ("fid", "kid", "kid_std")  # first in the run page's metrics; the history's columns


@dataclass(frozen=True)
class Copies:
    """How a page takes the files it shows from outside its own folder."""

    max_width: int | None  # wider pictures shrunk to this width (the page lays them out by width); None: as they are
    video_bytes: int | None  # bigger videos are left out, with a line saying so; None: no limit


WORKSPACE_COPIES = Copies(max_width=None, video_bytes=None)
RELEASE_COPIES = Copies(max_width=640, video_bytes=1_000_000)  # the demo's videos are ~10 kB
JPEG_QUALITY = 85


@dataclass(frozen=True)
class Picture:
    src: str | None  # URL relative to the page; None: missing, and `missing` says why
    caption: str
    missing: str | None = None
    grid: bool = False  # model outputs: enlarged with square pixels, not smoothed


class PageFiles:
    """The files one page shows, each as a URL relative to the page (see the module docstring)."""

    def __init__(self, root: Path, page: Path, copies: Copies):
        self.root, self.copies = root, copies
        self.folder = page.parent.resolve()
        self.copies_dir = self.folder / f"{page.stem}_files"
        self.kept: set[Path] = set()

    def picture(self, path: Path, caption: str, grid: bool = False, why_missing: str | None = None) -> Picture:
        src = self._url(path, picture=True)
        return Picture(src, caption, None if src else (why_missing or f"{path} not found"), grid)

    def video(self, path: Path) -> str | None:
        """The video's URL; None when it is too big for this page's copies."""
        limit = self.copies.video_bytes
        return self._url(path, picture=False) if limit is None or (self.root / path).stat().st_size <= limit else None

    def _url(self, path: Path, picture: bool) -> str | None:
        source = (self.root / path).resolve()
        if not source.is_file():
            return None
        if source.is_relative_to(self.folder) and not source.is_relative_to(self.copies_dir):
            return quote(source.relative_to(self.folder).as_posix())
        target = self.copies_dir / source.relative_to(self.root.resolve())
        if picture and self.copies.max_width:
            target = _small_copy(source, target, self.copies.max_width)
        else:
            atomic_write_bytes(target, source.read_bytes())
        self.kept.add(target)
        return quote(target.relative_to(self.folder).as_posix())

    def prune(self) -> None:
        """Remove the copies an earlier build left that this one no longer shows."""
        if not self.copies_dir.is_dir():
            return
        for path in sorted(self.copies_dir.rglob("*"), reverse=True):  # files before their folders
            if path.is_file() and path not in self.kept:
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()


def _small_copy(source: Path, target: Path, max_width: int) -> Path:
    """source shrunk to max_width (never enlarged), as the smallest of the original file (when it
    needed no shrinking), PNG and JPEG; returns the path written (its suffix says which)."""
    with Image.open(source) as image:
        image.load()
        original_size = image.size
        image.thumbnail((max_width, image.height), Image.Resampling.LANCZOS)
        shrunk = image.size != original_size
        encodings = [(".png", _encoded(image, "PNG")), (".jpg", _encoded(image.convert("RGB"), "JPEG"))]
    if not shrunk:
        encodings.append((source.suffix, source.read_bytes()))
    suffix, data = min(encodings, key=lambda item: len(item[1]))
    return atomic_write_bytes(target.with_suffix(suffix), data)


def _encoded(image: Image.Image, kind: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=kind, **({"quality": JPEG_QUALITY} if kind == "JPEG" else {"optimize": True}))
    return buffer.getvalue()


# --- the run page ---------------------------------------------------------------------------------

SECTIONS = (("dataset", "Dataset"), ("training", "Training"), ("finetune", "Base vs fine-tuned"),
            ("blend", "Blend"), ("portraits", "Portraits"), ("edits", "SeFa edits"), ("snapshots", "Snapshots"),
            ("videos", "Videos"), ("metrics", "Metrics"), ("params", "Params"))


@dataclass(frozen=True)
class ReleaseNote:
    tag: str
    reason: str  # the gate's verdict


def build_page(root: Path, out: Path, copies: Copies = WORKSPACE_COPIES, release: ReleaseNote | None = None,
               history: Path | None = None) -> Path:
    """The run page of the workspace at root, written to out; history: a page to link to."""
    root = Path(root).resolve()
    files = PageFiles(root, out, copies)
    previous = last_release(root)
    html = templates.get_template("run").render(
        title=f"styleforge run: {root.name}" if release is None else f"styleforge {release.tag}",
        style=STYLE, written=_now(), root=str(root),
        release=release, previous=previous.tag if previous else None, sections=SECTIONS,
        history=quote(os.path.relpath(history, out.parent)) if history else None,
        dataset=dataset_section(root, files), training=training_section(root, files),
        finetune=finetune_section(root, files),
        blend=blend_section(root, files), portraits=portraits_section(root, files),
        edits=edits_picture(root, files), snapshots=snapshots_section(root, files),
        videos=videos_section(root, files), metrics=metrics_section(root, files, previous),
        params=params_section(root, previous),
    )
    atomic_write(out, lambda tmp: tmp.write_text(html))
    files.prune()
    return out


def _now() -> str:
    return f"{datetime.now().astimezone():%Y-%m-%d %H:%M %Z}"


def _report(root: Path, stage: str) -> dict | None:
    return read_report(stage, root) if report_path(stage, root).exists() else None


def _number(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "—" if value is None else str(value)


def _table(caption: str, rows: list[tuple[str, object]]) -> dict:
    return {"caption": caption, "rows": [(name, _number(value)) for name, value in rows if value is not None]}


def _not_run(stage: str, report: str | None = None) -> str:
    return f"no {report or f'reports/{stage}.json'}: the {stage} stage has not run"


def dataset_section(root: Path, files: PageFiles) -> dict:
    scrape, faces, augment = reports = [_report(root, stage) for stage in DATASET_STAGES]
    if not any(reports):
        return {"missing": "no reports/scrape.json, faces.json or augment.json: the dataset stages have not run"}
    tables, pictures = [], []
    if scrape:
        refused = [(status.replace("_", " "), n) for status, n in sorted(scrape.get("statuses", {}).items())
                   if n and status != "ok"]
        tables.append(_table("scrape", [("pages fetched", scrape.get("pages_fetched")),
                                        ("images kept", scrape.get("images_ok")),
                                        ("fetched this run", scrape.get("this_run", {}).get("fetched")), *refused]))
    if faces:
        tables.append(_table("faces", [("photos in", faces.get("inputs")),
                                       ("photos with faces", faces.get("images_with_faces")),
                                       ("faces kept", faces.get("faces_written")),
                                       ("rejected", faces.get("rejected"))]))
        if faces.get("rejects"):
            tables.append(_table("faces rejected, by reason", sorted(faces["rejects"].items())))
        pictures += [files.picture(FACES_SHEET, "aligned face crops (a sample spread through the set)"),
                     files.picture(REJECTS_SHEET, "what the faces stage refused, captioned with the reason")]
    if augment:
        tables.append(_table("augment", [("faces in", augment.get("inputs")),
                                         ("training images", augment.get("outputs")),
                                         ("preset", augment.get("preset"))]))
        pictures.append(files.picture(AUGMENT_SHEET, "the training set after augmentation"))
    lines = [_not_run(stage) for stage, report in zip(DATASET_STAGES, reports, strict=True) if report is None]
    return {"missing": None, "tables": tables, "lines": lines, "pictures": pictures}


def training_section(root: Path, files: PageFiles) -> list[dict]:
    runs = []
    for stage, live in LIVE_DIRS.items():
        if _report(root, stage) is None:
            runs.append({"name": f"{stage} model", "missing": _not_run(stage), "chart": None, "samples": None})
            continue
        chart = training_chart(root / live / "plots/metrics")
        runs.append({
            "name": f"{stage} model", "chart": chart,
            "missing": None if chart else f"no training curves in {live}/plots/metrics: a loaded model is not "
                                          "trained here",
            "samples": files.picture(BASE_SAMPLES, "base model samples", grid=True) if stage == "base" else None,
        })
    return runs


def finetune_section(root: Path, files: PageFiles) -> dict:
    if _report(root, "finetune") is None:
        return {"missing": _not_run("finetune")}
    return {"missing": None, "pictures": [
        files.picture(COMPARISON, "the same z: base model above, fine-tuned below", grid=True),
        files.picture(FINETUNE_SAMPLES, "fine-tuned samples (G_ema)", grid=True)]}


def read_tsv(path: Path) -> dict[int, float]:
    """A DVCLive metric file: {step: value} (its columns are named; the metric's is the file's stem)."""
    with path.open(newline="") as stream:
        return {int(row["step"]): float(row[path.stem]) for row in csv.DictReader(stream, delimiter="\t")}


def training_chart(metrics_dir: Path) -> Markup | None:
    """CURVES as one row of small charts against kimg, an inline SVG; None without DVCLive files."""
    series = {name: read_tsv(metrics_dir / f"{name}.tsv") for _, names in CURVES for name in names
              if (metrics_dir / f"{name}.tsv").is_file()}
    if not any(series.values()):
        return None
    kimg_file = metrics_dir / "train/kimg.tsv"
    kimg = read_tsv(kimg_file) if kimg_file.is_file() else None
    import matplotlib  # only where a chart is drawn: it takes a second to load
    from matplotlib.figure import Figure

    # fonttype none: text stays text, set in the reader's own fonts (no glyphs, no font files)
    with matplotlib.rc_context({"svg.fonttype": "none", "font.size": 8, "axes.titlesize": 9}):
        figure = Figure(figsize=(2.3 * len(CURVES), 2.0), layout="constrained")
        for axes, (title, names) in zip(figure.subplots(1, len(CURVES)), CURVES, strict=True):
            axes.set_title(title)
            axes.set_xlabel("kimg" if kimg else "step")
            drawn = [name for name in names if series.get(name)]
            for name in drawn:
                steps = sorted(s for s in series[name] if kimg is None or s in kimg)
                xs = [kimg[s] for s in steps] if kimg else steps
                axes.plot(xs, [series[name][s] for s in steps], marker="." if len(steps) < 30 else None,
                          linewidth=1, label=name.split("/")[-1])
            if len(drawn) > 1:
                axes.legend(frameon=False)
            if not drawn:
                axes.text(0.5, 0.5, "not logged", ha="center", va="center", transform=axes.transAxes)
        svg = io.StringIO()
        figure.savefig(svg, format="svg", metadata={"Date": None, "Creator": None})
    text = svg.getvalue()
    return Markup(text[text.index("<svg"):])  # inline: no XML prolog or doctype inside HTML


def blend_section(root: Path, files: PageFiles) -> dict:
    report = _report(root, "blend")
    if report is None:
        return {"missing": _not_run("blend")}
    columns, chosen = report.get("sweep_columns", []), f"cut {report['swap_res']}"
    how = (f"blend_width {report.get('blend_width', 0)}" + (", reversed (Toonify)" if report.get("reverse") else ""))
    caption = (f"rows: seeds; columns: {', '.join(columns)}. Outlined: the cut in use, "
               f"swap_res {report['swap_res']} ({how}).")
    sweep = files.picture(SWEEP_SHEET, caption, grid=True)
    if chosen not in columns:
        return {"missing": None, "sweep": sweep, "cut": None,
                "lines": [f"swap_res {report['swap_res']} is not one of the sweep's columns ({', '.join(columns)})"]}
    width = 100 / len(columns)
    return {"missing": None, "sweep": sweep, "lines": [],
            "cut": {"left": f"{columns.index(chosen) * width:.4f}", "width": f"{width:.4f}"}}


def portraits_section(root: Path, files: PageFiles) -> dict:
    report = _report(root, "portraits")
    if report is None:
        return {"missing": _not_run("portraits")}
    sheet = files.picture(PORTRAITS_SHEET, "input | reconstruction | portrait, one row per photo", grid=True)
    photos, lines = [], []
    for result in report.get("results", []):
        if result["status"] != "ok":
            lines.append(f"{Path(result['photo']).name}: skipped ({result['reason']})")
            continue
        folder = PORTRAITS_DIR / result["name"]
        photos.append({"name": result["name"], "distance": _number(result.get("distance")),
                       "pictures": [files.picture(folder / f"{kind}.png", f"{result['name']}: {kind}", grid=True)
                                    for kind in ("input", "reconstruction", "portrait")]})
    if report.get("warning"):
        lines.append(report["warning"])
    return {"missing": None, "sheet": sheet, "photos": photos, "lines": lines}


def edits_picture(root: Path, files: PageFiles) -> Picture:
    """reports/edit.png, rendered first by `styleforge edit` when the blend's directions are newer."""
    grid, directions, model = root / EDIT_GRID, root / SEFA_FILE, root / BLEND_MODEL
    caption = (f"SeFa directions of the blended model: a row per latent (seeds, then the projected photos) and "
               f"direction, -{EDIT_DEGREE:g} to +{EDIT_DEGREE:g} along it across")
    if directions.is_file() and model.is_file():
        stale = not grid.is_file() or grid.stat().st_mtime < max(directions.stat().st_mtime, model.stat().st_mtime)
        if stale:
            failure = render_edits(root)
            if failure:
                return Picture(None, caption, failure)
    return files.picture(EDIT_GRID, caption, grid=True, why_missing=_not_run("blend", f"{EDIT_GRID} nor {SEFA_FILE}"))


def render_edits(root: Path) -> str | None:
    """EDIT_GRID by the `styleforge edit` command, for seeds and the projected photos; None, or why
    it failed. A process of its own: the command is the application's, a floor above this one."""
    import numpy as np

    with np.load(root / SEFA_FILE) as saved:
        available = len(saved["eigenvalues"])
    latents = [arg for path in sorted((root / PORTRAITS_DIR).glob("*/latent.npz"))
               for arg in ("--latent", str(path.relative_to(root)))]
    command = [sys.executable, "-m", "styleforge.app.cli", "edit", "--model", str(BLEND_MODEL),
               "--sefa", str(SEFA_FILE), "--seeds", EDIT_SEEDS, *latents,
               "--directions", f"0:{min(EDIT_DIRECTIONS, available)}", "--degree", str(EDIT_DEGREE),
               "--out", str(EDIT_GRID)]
    proc = subprocess.run(command, cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip() or proc.stdout.strip() or f"exit {proc.returncode}").splitlines()[-1]
        return f"could not render the SeFa edits ({' '.join(command[3:])}): {last}"
    return None


def snapshots_section(root: Path, files: PageFiles) -> dict:
    report = _report(root, "finetune")
    if report is None or not report.get("snapshots"):
        return {"missing": "no snapshots: reports/finetune.json is missing or lists none"}
    folder = FINETUNE_CHECKPOINTS / report["run_key"] / "snapshots"
    picked = report.get("picked") or {}
    rows = [{
        "step": s["step"], "kimg": _number(s["kimg"]), "picked": s["step"] == picked.get("step"),
        "metrics": ", ".join(f"{k} {_number(v)}" for k, v in s.get("metrics", {}).items()) or "—",
        "grid": files.picture(folder / s["grid"], f"snapshot at step {s['step']}", grid=True,
                              why_missing=f"{folder / s['grid']} is no longer kept"),
    } for s in report["snapshots"]]
    return {"missing": None, "rows": rows, "why": picked.get("why")}


def videos_section(root: Path, files: PageFiles) -> dict:
    """The walk stage's videos (reports/walk.json lists them)."""
    report = _report(root, "walk")
    if report is None:
        return {"missing": _not_run("walk")}
    captions = {report["walk"]: f"latent walk of the blended model through seeds {report.get('seeds')}"}
    captions |= {name: f"{Path(name).stem}: the photo by the base model, then blend by blend, to the fine-tuned "
                       "model and back" for name in report.get("morphs", [])}
    shown, lines = [], []
    for name, caption in captions.items():
        if not (root / name).is_file():
            lines.append(f"{name} not found")
        elif src := files.video(Path(name)):
            shown.append({"src": src, "caption": caption})
        else:
            size = (root / name).stat().st_size / 1e6
            lines.append(f"{name} ({size:.1f} MB) is bigger than a release copies: `dvc pull` at the release's "
                         "tag brings it back")
    return {"missing": None, "shown": shown, "lines": lines}


def flat(tree: dict, prefix: str = "") -> dict[str, object]:
    """Nested dicts as dotted keys; lists and scalars are leaves."""
    leaves: dict[str, object] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        leaves |= flat(value, f"{name}.") if isinstance(value, dict) else {name: value}
    return leaves


def _figures(metrics: dict) -> dict[str, float | None]:
    """The metrics' figures by dotted name: numbers, and nulls (what evaluate could not measure,
    it says why in `skipped`); seconds is the run's time, not a measure of the model."""
    return {k: v for k, v in flat(metrics).items()
            if (v is None or isinstance(v, (int, float)) and not isinstance(v, bool)) and k != "seconds"}


def metrics_section(root: Path, files: PageFiles, previous: Release | None) -> dict:
    path = root / METRICS_FILE
    if not path.is_file():
        return {"missing": _not_run("evaluate", METRICS_FILE)}
    samples = files.picture(EVALUATE_SAMPLES, "evaluate: the first samples of the fine-tuned model", grid=True)
    now = json.loads(path.read_text())
    before = previous.metrics if previous else {}
    now_figures, before_figures = _figures(now), _figures(before)
    found = list(now_figures) + [name for name in before_figures if name not in now_figures]
    names = [name for name in MODEL_METRICS if name in found] + [name for name in found if name not in MODEL_METRICS]
    rows = [(name, _number(now_figures.get(name)), _number(before_figures.get(name))) for name in names]
    lines = [f"this run: {now['skipped']}"] if now.get("skipped") else []
    return {"missing": None, "rows": rows, "lines": lines, "samples": samples}


def params_section(root: Path, previous: Release | None) -> dict:
    if previous is None:
        return {"missing": "no earlier nightly release in this history: nothing to compare with"}
    then = file_at(root, previous.commit, "params.yaml")
    now_path = root / "params.yaml"
    before = flat(yaml.safe_load(then) or {}) if then else {}
    now = flat(yaml.safe_load(now_path.read_text()) or {}) if now_path.is_file() else {}
    absent = object()
    rows = [(key, _param(before.get(key, absent), absent), _param(now.get(key, absent), absent))
            for key in sorted(set(before) | set(now)) if before.get(key, absent) != now.get(key, absent)]
    if not rows:
        return {"missing": f"params.yaml is as in {previous.tag}"}
    return {"missing": None, "rows": rows}


def _param(value, absent) -> str:
    return "(absent)" if value is absent else json.dumps(value, default=str)


# --- releases and the history page ---------------------------------------------------------------

def keep_release_page(root: Path, tag: str, reason: str) -> Path:
    """The night's page for release `tag` with small copies of what it shows, in its own folder
    (reports/releases/<tag>/), which the release commits; returns that folder."""
    page = build_page(root, Path(root) / RELEASES_DIR / tag / PAGE.name, RELEASE_COPIES, ReleaseNote(tag, reason))
    return page.parent


@dataclass(frozen=True)
class Night:
    tag: str
    created: datetime
    reason: str  # the gate's verdict, the tag's message
    metrics: dict[str, str]
    page: str | None  # URL from history.html; None: this release kept no page
    thumbnails: list[str] = field(default_factory=list)


def nights(root: Path) -> list[Night]:
    """Every nightly-* tag, newest night first by its name (nightly-YYYYMMDD-N: version order puts
    -10 after -9). Raises ReleaseError outside a git repository."""
    listing = git(root, "for-each-ref", "--sort=-version:refname",
                  "--format=%(refname:short)%00%(creatordate:iso-strict)%00%(contents:subject)",
                  f"refs/tags/{TAG_PREFIX}*")
    found = []
    for line in filter(None, listing.splitlines()):
        tag, created, reason = line.split("\0")
        committed = file_at(root, tag, METRICS_FILE)
        metrics = _figures(json.loads(committed)) if committed else {}
        night = Night(tag, datetime.fromisoformat(created), reason,
                      {name: _number(metrics.get(name)) for name in MODEL_METRICS}, page=None)
        folder = _release_folder(root, tag)
        if folder is not None:
            copies = folder / f"{PAGE.stem}_files"  # the page's copies keep their paths in the project
            thumbnails = [path for picture in THUMBNAILS
                          for path in sorted(copies.glob(f"{picture.with_suffix('')}.*"))]
            night = replace(night, page=_from_history(root, folder / PAGE.name),
                            thumbnails=[_from_history(root, path) for path in thumbnails])
        found.append(night)
    return found


def _release_folder(root: Path, tag: str) -> Path | None:
    """reports/releases/<tag>/ in the workspace, restored from the tag's commit if it is not there
    (a tag on another branch); None when the release kept no page (made before pages were kept)."""
    folder = root / RELEASES_DIR / tag
    if (folder / PAGE.name).is_file():
        return folder
    if file_at(root, tag, (RELEASES_DIR / tag / PAGE.name).as_posix()) is None:
        return None
    archive = subprocess.run(["git", "archive", "--format=tar", tag, "--", (RELEASES_DIR / tag).as_posix()],
                             cwd=root, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(root, filter="data")  # "data": nothing outside root, no links or devices
    return folder


def _from_history(root: Path, path: Path) -> str:
    return quote(path.relative_to(root / HISTORY.parent).as_posix())


def write_history(root: Path) -> Path:
    """reports/history.html: every nightly release, newest first, with its night's page."""
    root = Path(root).resolve()
    try:
        found, missing = nights(root), None
    except ReleaseError:
        found, missing = [], f"{root} is not a git repository: releases are git tags"
    if not found and missing is None:
        missing = f"no {TAG_PREFIX}* release yet: `styleforge nightly` publishes one"
    html = templates.get_template("history").render(
        title=f"styleforge nightly releases: {root.name}", style=STYLE, root=str(root), written=_now(),
        last_run=_kept_since(root, found), missing_line=missing, nights=found, metric_names=MODEL_METRICS,
    )
    return atomic_write(root / HISTORY, lambda tmp: tmp.write_text(html))


def _kept_since(root: Path, found: list[Night]) -> dict | None:
    """The last nightly run (reports/nightly.json) if it kept the release after the newest one was
    made: the one outcome the tags do not show. (A release writes the history before its own run
    writes nightly.json, so the summary on disk may be an older night's.)"""
    path = root / NIGHTLY_SUMMARY
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    started = datetime.fromisoformat(summary["started"])
    if summary["published"] or (found and started <= max(night.created for night in found)):
        return None
    return {"started": f"{started:%Y-%m-%d %H:%M}", "reason": summary["reason"],
            "kept": summary["release"] or "no release"}


def write_pages(root: Path, out: Path | None = None) -> tuple[Path, Path]:
    """The run page (out, default reports/index.html) and reports/history.html, which it links to
    when they share a folder. What the pipeline flow does at its end and `styleforge report` does."""
    root = Path(root).resolve()
    out = Path(out).resolve() if out else root / PAGE
    history = write_history(root)
    page = build_page(root, out, history=history if history.parent == out.parent else None)
    return page, history
