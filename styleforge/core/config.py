"""The one schema for params.yaml: every stage reads its own validated section from here.

Unknown keys and wrong types stop the run with the dotted key and what it expects.
"""

from __future__ import annotations

import ipaddress
import textwrap
from pathlib import Path
from typing import Annotated, Literal, NamedTuple

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from styleforge.core import images
from styleforge.core.errors import UserError

PARAMS_FILE = "params.yaml"


def _power_of_two(value: int) -> int:
    if value & (value - 1):
        raise ValueError("must be a power of two")
    return value


PowerOfTwo = Annotated[int, AfterValidator(_power_of_two)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(Section):
    """One page to collect images from."""

    url: str = Field(description="page to collect images from (http or https)")
    mode: Literal["static", "browser"] = Field(
        "static", description="static: requests + BeautifulSoup; browser: headless Chromium (scripts, infinite scroll)"
    )
    selector: str | None = Field(None, description="CSS selector that scopes where images are looked for")
    max_images: int = Field(200, ge=1, description="most images taken from this source")
    scroll_rounds: int = Field(20, ge=0, description="browser mode: most scrolls before giving up")

    @field_validator("url")
    @classmethod
    def _http_only(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return url


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Service(NamedTuple):
    """One trusted inside service: an address and a port."""

    address: IPAddress
    port: int


ALLOW_PRIVATE_FORMS = "an IP address and port (127.0.0.1:8765, [::1]:8765) or a CIDR network (10.0.0.0/8)"


def parse_allow_private(entry: str) -> Service | IPNetwork:
    """One scrape.allow_private entry: 'address:port' trusts that one service, a CIDR network every
    port of every address in it. Host names are refused: the scraper checks the address it actually
    connects to, and a name can point elsewhere tomorrow."""
    entry = entry.strip()
    if "/" in entry:
        try:
            return ipaddress.ip_network(entry)  # strict: 10.0.0.1/8 is more likely a typo than meant
        except ValueError as exc:
            raise ValueError(f"must be {ALLOW_PRIVATE_FORMS}: {exc}") from None
    host, _, port = entry.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        address = ipaddress.ip_address(host[1:-1] if bracketed else host)
    except ValueError:
        raise ValueError(f"must be {ALLOW_PRIVATE_FORMS} (a host name is not accepted; a bare address needs "
                         "a port, or /32 for all its ports)") from None
    if address.version == 6 and not bracketed:
        raise ValueError(f"must be {ALLOW_PRIVATE_FORMS}: write an IPv6 address in brackets")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"must be {ALLOW_PRIVATE_FORMS}: the port must be 1-65535")
    return Service(address, int(port))


def _allow_private_entry(entry: str) -> str:
    parse_allow_private(entry)
    return entry.strip()


class ScrapeParams(Section):
    """scrape: the source pages' images into data/raw, politely (robots.txt, pacing, retries) and safely
    (deadlines, size caps, no inside addresses but those trusted)."""

    sources: list[Source] = Field(default_factory=list, description="the pages to collect images from")
    allow_private: list[Annotated[str, AfterValidator(_allow_private_entry)]] = Field(
        default_factory=list,
        description="inside addresses the scrape may fetch from (loopback, private, link-local and other "
        "non-public ones are refused otherwise): 'address:port' entries or CIDR networks",
    )
    user_agent: str = Field("styleforge/0.1 (+https://github.com/styleforge/styleforge)",
                            description="the User-Agent sent, and the one robots.txt rules are read for")
    concurrency: int = Field(4, ge=1, le=64, description="downloads in flight at once (each host is still paced)")
    per_host_rate: float = Field(2.0, gt=0, description="requests per second to one host")
    timeout_s: float = Field(20.0, gt=0, description="longest single wait: to connect, or for the next bytes")
    retries: int = Field(3, ge=0, le=10, description="retries of a 429, 5xx or dropped connection")
    backoff_s: float = Field(1.0, ge=0, description="first retry delay; doubles each try")
    max_retry_after_s: float = Field(60.0, ge=0, description="longest Retry-After honoured")
    max_bytes: int = Field(20_000_000, ge=1024, description="largest image file accepted, checked while streaming")
    max_pixels: int = Field(images.MAX_PIXELS, ge=1, description="decoded size cap: bigger is a decompression bomb")
    min_side: int = Field(64, ge=1, description="images smaller than this on either side are rejected")
    content_types: list[str] = Field(
        default_factory=lambda: ["image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp", "image/tiff"],
        description="Content-Types downloaded; anything else is refused before its body is read",
    )
    near_duplicate_bits: int = Field(4, ge=0, le=64, description="perceptual-hash distance counted as a duplicate")
    page_load_timeout_s: float = Field(30.0, gt=0, description="browser mode: longest a page may take to load")
    script_timeout_s: float = Field(
        10.0, gt=0, description="browser mode: longest one script the scraper runs in the page may take"
    )
    source_deadline_s: float = Field(
        180.0, gt=0, description="browser mode: longest one source may take, loading and scrolling included; past "
        "it that browser is ended and the next source gets a fresh one",
    )
    scroll_wait_s: float = Field(
        3.0, gt=0, description="browser mode: how long a scroll may take to bring new images before scrolling stops"
    )
    max_download_s: float = Field(
        120.0, gt=0, description="longest one fetch (page, robots.txt or image) may take, wall clock, from connecting "
        "to the last byte, retries included (timeout_s bounds each single wait for data)",
    )
    batch_size: int = Field(32, ge=1, description="images downloaded between two saves of the manifest")


class FacesParams(Section):
    """faces: data/raw -> data/faces, each face found, levelled and framed like FFHQ, square, padded
    never stretched."""

    resolution: Literal[256, 1024] = Field(256, description="side of the square crops written")
    margin: float = Field(
        0.5, ge=0, le=3, description="context on each side of the face, as a fraction of its size; 0.5 frames like FFHQ"
    )
    min_face: int = Field(64, ge=8, description="smallest face side in source pixels; smaller is rejected, not upscaled")
    multi_face: Literal["all", "largest"] = Field("all", description="all faces of a photo, or only its largest")
    require_eyes: bool = Field(True, description="keep only faces where two plausible eyes are found")
    second_opinion: bool = Field(True, description="keep only faces that a second Haar cascade confirms")
    min_neighbors: int = Field(3, ge=1, description="Haar detection confidence: neighbouring hits required")
    min_confidence: float = Field(
        3.0, description="Haar last-stage weight needed: faces scored 2.5-12, false alarms passing the rest 0.8-2.8"
    )
    detect_side: int = Field(
        640, ge=64, description="longest side of the copy searched: bounds the cost and the smallest face found"
    )
    max_pixels: int = Field(images.MAX_PIXELS, ge=1, description="decoded size cap: bigger is a decompression bomb")
    workers: int = Field(0, ge=0, description="processes; 0 uses every core")


class AugmentParams(Section):
    """augment: data/faces -> data/train, seeded Albumentations (mirror only by default)."""

    copies: int = Field(1, ge=1, le=100, description="augmented copies per face (full preset)")
    seed: int = Field(0, description="with the file and copy index, fixes every augmentation drawn")
    preset: Literal["safe", "full"] = Field(
        "safe", description="safe: horizontal flip only (does not leak); full: every OneOf group"
    )
    group_p: float = Field(0.5, ge=0, le=1, description="probability that each OneOf group fires")
    keep_original: bool = Field(True, description="the face itself is in the training set beside its copies")

    @model_validator(mode="after")
    def _safe_is_one_mirror(self) -> "AugmentParams":
        if self.preset == "safe" and self.copies != 1:
            raise ValueError("the safe preset makes exactly one mirrored copy: set copies: 1 or preset: full")
        return self


class EvaluateParams(Section):
    """evaluate: FID and KID of the fine-tuned model against the training set."""

    inception: str | None = Field(
        None,
        description="StyleGAN2-ADA's TorchScript Inception detector (inception-2015-12-05.pt): a path or an "
        "http(s) URL, downloaded once into cache_dir; unset skips FID and KID",
    )
    inception_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="expected sha256 of the weights")
    cache_dir: str = Field(".cache/inception", description="where downloaded weights are kept, from the project root")
    num_generated: int = Field(5000, ge=2, description="images generated (seeds seed .. seed+N-1) to compare")
    seed: int = Field(0, ge=0, description="first seed of the generated images")
    batch_size: int = Field(32, ge=1, description="images per detector and generator call")
    kid_subsets: int = Field(100, ge=1, description="KID: random subsets averaged (KID paper, StyleGAN2-ADA)")
    kid_subset_size: int = Field(1000, ge=2, description="KID: most images per subset")


class GateParams(Section):
    """The release gate: the metric a new model must not be worse in than the last release."""

    metric: Literal["fid", "kid"] = Field("fid", description="the figure a release must not be worse in")
    margin: float = Field(0.0, ge=0, description="how much worse than the last release still publishes")
    higher_is_better: bool = Field(False, description="true for a metric where more is better")


class NightlyParams(Section):
    """nightly: when the scheduled fine-tune runs, how it is gated, where releases are pushed."""

    cron: str = Field("30 3 * * *", description="when the nightly deployment runs (5-field cron)")
    timezone: str = Field("UTC", description="IANA time zone of cron, and of the date in release tags")
    gate: GateParams = GateParams()
    remote: str = Field(
        "../styleforge-remote", description="DVC remote: a folder (relative to the project root) or s3://bucket/path"
    )
    lock_timeout_s: float = Field(600.0, ge=0, description="longest wait for a workspace another run holds")
    deadline_h: float = Field(
        8.0, gt=0, description="longest a night may run: past it the running stage is ended with everything it "
        "started, the workspace is released, and the next night resumes from the checkpoints"
    )

    @field_validator("cron")
    @classmethod
    def _five_fields(cls, cron: str) -> str:
        if len(cron.split()) != 5:  # the fields themselves are checked by Prefect when the schedule is served
            raise ValueError("must have 5 fields: minute hour day-of-month month day-of-week")
        return cron

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("must be an IANA time zone such as UTC or Europe/Paris") from None
        return name


class ModelParams(Section):
    """Shape of a model the base stage trains from scratch (model.networks.ModelConfig fields)."""

    size: PowerOfTwo = Field(32, ge=8, description="output resolution, a power of two")
    style_dim: int = Field(64, ge=1, description="z and W width")
    n_mlp: int = Field(2, ge=1, description="mapping-network layers")
    channel_multiplier: int = Field(1, ge=1, description="rosinality's width factor: 2 is config F at 256 and above")
    channel_max: int = Field(64, ge=1, description="feature maps at any resolution, at most")
    channel_base: int | None = Field(None, ge=1, description="feature maps = min(channel_max, channel_base / res)")


class TrainParams(Section):
    """One StyleGAN2 training run (model.train); the base and finetune sections both hold these.

    Defaults are StyleGAN2's (config F, 256x256, one GPU); params.yaml scales them for the CPU.
    """

    kimg: float = Field(1000.0, gt=0, description="length of the run in thousands of real images shown to D")
    batch: int = Field(16, ge=1, description="images per optimiser step over all ranks (a multiple of ranks)")
    lr: float = Field(0.002, gt=0, description="Adam learning rate, betas (0, 0.99), lazy-regularisation corrected")
    r1_gamma: float = Field(10.0, ge=0, description="R1 weight; NVIDIA's auto rule is 0.0002 * res^2 / batch")
    r1_every: int = Field(16, ge=1, description="lazy R1: steps between R1 steps")
    pl_weight: float = Field(2.0, ge=0, description="path-length regularisation weight; 0 turns it off")
    pl_every: int = Field(4, ge=1, description="lazy path length: steps between its steps")
    pl_batch_shrink: int = Field(2, ge=1, description="path-length batch = batch / this")
    style_mixing: float = Field(0.9, ge=0, le=1, description="probability of mixing two z in one image")
    ema_kimg: float = Field(10.0, gt=0, description="half-life of G_ema in thousands of images")
    augment_p: float = Field(0.0, ge=0, le=1, description="initial ADA probability (the fixed one without ada_target)")
    ada_target: float | None = Field(0.6, gt=0, lt=1, description="ADA r_t target; null keeps augment_p fixed")
    ada_kimg: float = Field(500.0, gt=0, description="ADA speed: kimg for p to move by 1")
    ada_interval: int = Field(4, ge=1, description="steps between ADA adjustments")
    checkpoint_every: int = Field(500, ge=1, description="steps between resumable checkpoints")
    sample_every: int = Field(500, ge=1, description="steps between sample grids")
    log_every: int = Field(10, ge=1, description="steps averaged into one DVCLive row")
    samples: int = Field(16, ge=1, le=64, description="images in a sample grid (fixed z)")
    snapshot_kimg: float = Field(16.0, gt=0, description="kimg between kept snapshots: a numbered checkpoint and grid")
    keep_snapshots: int = Field(8, ge=1, description="snapshots kept: the newest, and the best by the metric")
    keep_runs: int = Field(2, ge=1, description="runs whose checkpoints are kept, this one included: a changed "
                           "param starts a new run, and changing it back resumes the kept one")
    seed: int = Field(0, description="fixes the initial weights, every step's draws, the data order and the grids' z")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: the GPU where torch sees one")
    bf16: bool = Field(False, description="bf16 autocast for G and D forward passes (GPU only)")
    workers: int = Field(2, ge=0, description="data-loader processes per rank")


class BaseParams(TrainParams):
    """The model fine-tuning starts from: a checkpoint, or (none given) a small model trained here."""

    checkpoint: str | None = Field(None, description="rosinality .pt, NVIDIA .pkl or ours: a path or http(s) URL")
    sha256: str | None = Field(None, description="expected SHA-256 of the checkpoint file")
    cache_dir: str = Field(".cache/checkpoints", description="where downloaded checkpoints are kept")
    dataset: str = Field("data/faces", description="folder of real images to train on when no checkpoint is given")
    model: ModelParams = ModelParams()
    kimg: float = Field(20.0, gt=0, description="length of the from-scratch run in thousands of images")

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, digest: str | None) -> str | None:
        if digest is not None and (len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest.lower())):
            raise ValueError("must be 64 hex digits")
        return digest.lower() if digest else digest


class FinetuneParams(TrainParams):
    """Fine-tune data/base/model.pt on data/train, FreezeD/FreezeG as model/freeze.py defines them."""

    dataset: str = Field("data/train", description="training set folder (dataset.json, or every image in it)")
    freeze_d: int = Field(3, ge=0, description="D blocks frozen from the image input (3 = NVIDIA --freezed 10)")
    freeze_g: int = Field(0, ge=0, description="G blocks frozen from 4x4 up")
    freeze_mapping: bool = Field(False, description="freeze the mapping network too")
    freeze_noise: bool = Field(True, description="keep the base's noise strengths (else the look can turn into speckle)")
    pick: Literal["last", "best"] = Field(
        "last", description="which snapshot becomes data/finetune/model.pt: the last, or the best FID "
        "(measured at each snapshot when evaluate.inception is set; else the last, saying why)"
    )


class BlendParams(Section):
    """Layer swap of data/base and data/finetune into data/blend (model/blend.py)."""

    swap_res: PowerOfTwo = Field(32, ge=4, description="blocks up to this resolution, and the mapping, from the coarse side")
    blend_width: int = Field(0, ge=0, description="resolutions above swap_res interpolated linearly; 0 is a hard cut")
    reverse: bool = Field(False, description="coarse layers from the fine-tuned model instead of the base (Toonify)")
    truncation: float = Field(0.7, gt=0, le=1, description="psi of the sweep grid's samples")
    sweep_seeds: list[int] = Field(default_factory=lambda: [0, 1, 2, 3], min_length=1, description="one sweep row each")
    sefa_components: int = Field(16, ge=1, description="SeFa directions saved to data/blend/sefa.npz")
    sefa_layers: tuple[int, int] | None = Field(
        None, description="styled convs [start, stop) factorised (0 = 4x4 conv1); null: all of them"
    )


class LpipsParams(Section):
    """Weights of the LPIPS distance; without both, projection uses the pixel fallback (one warning)."""

    vgg: str | None = Field(
        None, description="torchvision VGG16 state dict, e.g. https://download.pytorch.org/models/vgg16-397923af.pth"
    )
    vgg_sha256: str | None = Field(
        None, pattern=r"^[0-9a-f]{8,64}$", description="its sha256 or leading digits (torchvision names files by 8)"
    )
    lin: str | None = Field(
        None,
        description="LPIPS v0.1 heads (vgg.pth), e.g. from "
        "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth",
    )
    lin_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{8,64}$", description="its sha256 or leading digits")
    cache_dir: str = Field(".cache/lpips", description="where downloaded weights are kept, from the project root")


class ProjectionParams(Section):
    """Inversion into the base model's latent space (model/project.py); rosinality's defaults."""

    steps: int = Field(1000, ge=1, description="optimisation steps per photo")
    lr: float = Field(0.1, gt=0, description="peak Adam learning rate of the cosine ramp")
    lr_rampup: float = Field(0.05, gt=0, le=1, description="fraction of the steps spent warming up")
    lr_rampdown: float = Field(0.25, gt=0, le=1, description="fraction of the steps spent cooling down")
    latent_noise: float = Field(0.05, ge=0, description="initial latent jitter, a fraction of W's spread")
    latent_noise_ramp: float = Field(0.75, gt=0, le=1, description="fraction of the steps the jitter takes to vanish")
    noise_regularize: float = Field(1e5, ge=0, description="weight that keeps the noise maps from learning the photo")
    mse: float = Field(0.0, ge=0, description="weight of an extra pixel MSE term")
    w_plus: bool = Field(False, description="one W per layer: closer fit, weaker edits and blends")
    n_mean_latent: int = Field(10000, ge=2, description="z samples that locate W's mean and spread")


class PortraitsParams(Section):
    """Photos -> the largest face, found and aligned with the faces section's settings (max_pixels
    included) -> projection into the base model -> rendered by the blended model."""

    photos: str = Field("photos", description="folder of photos, from the project root")
    look: str = Field("data/train", description="the target look's images: each portrait is measured against them")
    projection: ProjectionParams = ProjectionParams()
    lpips: LpipsParams = LpipsParams()
    seed: int = Field(0, description="fixes the projection's starting noise and jitter")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: the GPU where torch sees one")


class WalkParams(Section):
    """walk: videos of the blended model (a latent walk) and of each portrait taking on the look."""

    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2, 3], min_length=2,
                             description="the faces the walk passes through, in order, then back to the first")
    frames: int = Field(96, ge=2, description="frames of the walk")
    fps: float = Field(24.0, gt=0, description="frames per second of both videos")
    truncation: float = Field(0.7, gt=0, le=1, description="psi of the walk's faces")
    morphs: int = Field(4, ge=0, description="portraits that get a morph video (the first, by name)")
    morph_frames: int = Field(72, ge=2, description="frames of each morph: base, the blends, fine-tuned and back")


class Params(Section):
    scrape: ScrapeParams = ScrapeParams()
    faces: FacesParams = FacesParams()
    augment: AugmentParams = AugmentParams()
    base: BaseParams = BaseParams()
    finetune: FinetuneParams = FinetuneParams()
    evaluate: EvaluateParams = EvaluateParams()
    nightly: NightlyParams = NightlyParams()
    blend: BlendParams = BlendParams()
    portraits: PortraitsParams = PortraitsParams()
    walk: WalkParams = WalkParams()


class ParamsError(UserError, ValueError):
    """params.yaml does not fit the schema; the message names every offending key."""


def _describe(error: dict) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "<top level>"
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key"
    return f"{key}: {error['msg']} (got {error.get('input')!r})"


def parse_params(raw: dict | None, origin: str = PARAMS_FILE) -> Params:
    try:
        return Params.model_validate(raw or {})
    except ValidationError as exc:
        lines = "\n  ".join(_describe(e) for e in exc.errors())
        raise ParamsError(f"{origin} is not valid:\n  {lines}") from None


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path} not found: run from the project root or pass --params")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path} is not valid YAML: {exc}") from None
    if raw is not None and not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    return parse_params(raw, str(path))


def _summary(model: type[BaseModel]) -> str:
    """A model's docstring up to its first blank line, as one line."""
    return " ".join((model.__doc__ or "").strip().split("\n\n")[0].split())


def params_yaml(params: Params) -> str:
    """params as the YAML of params.yaml with every key written, each under its description: the
    file DVC reads, so every effective value is visible and a change to any of them is tracked.
    `styleforge params` prints it."""
    lines: list[str] = []

    def comment(text: str | None, pad: str) -> None:
        if text:
            lines.extend(f"{pad}# {line}" for line in textwrap.wrap(text, 100 - len(pad)))

    def scalar(value) -> str:
        return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()

    def emit(model: BaseModel, pad: str, first: str = "") -> None:
        for index, (name, info) in enumerate(type(model).model_fields.items()):
            value = getattr(model, name)
            lead = first if index == 0 and first else pad
            if lead == pad:  # a list item's first key shares the "- " line: no comment above it
                comment(info.description or (_summary(type(value)) if isinstance(value, BaseModel) else None), pad)
            if isinstance(value, BaseModel):
                lines.append(f"{lead}{name}:")
                emit(value, pad + "  ")
            elif isinstance(value, list) and value and isinstance(value[0], BaseModel):
                lines.append(f"{lead}{name}:")
                for item in value:
                    emit(item, pad + "    ", first=pad + "  - ")
            else:
                dumped = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
                dumped = list(dumped) if isinstance(dumped, tuple) else dumped
                lines.append(f"{lead}{name}: {scalar(dumped)}")

    for name, info in Params.model_fields.items():
        section = getattr(params, name)
        lines.append("")
        comment(_summary(type(section)), "")
        lines.append(f"{name}:")
        emit(section, "  ")
    return "\n".join(lines).lstrip("\n") + "\n"
