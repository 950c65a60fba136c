"""The one schema for params.yaml: every stage reads its own validated section from here.

Unknown keys and wrong types stop the run with the dotted key and what it expects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PARAMS_FILE = "params.yaml"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(Section):
    url: str
    mode: Literal["static", "browser"] = "static"
    selector: str | None = Field(None, description="CSS selector that scopes where images are looked for")
    max_images: int = Field(200, ge=1)
    scroll_rounds: int = Field(20, ge=0, description="browser mode: most scrolls before giving up")

    @field_validator("url")
    @classmethod
    def _http_only(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return url


class ScrapeParams(Section):
    sources: list[Source] = Field(default_factory=list)
    user_agent: str = "styleforge/0.1 (+https://github.com/styleforge/styleforge)"
    concurrency: int = Field(4, ge=1, le=64)
    per_host_rate: float = Field(2.0, gt=0, description="requests per second to one host")
    timeout_s: float = Field(20.0, gt=0)
    retries: int = Field(3, ge=0, le=10)
    backoff_s: float = Field(1.0, ge=0, description="first retry delay; doubles each try")
    max_retry_after_s: float = Field(60.0, ge=0, description="longest Retry-After honoured")
    max_bytes: int = Field(20_000_000, ge=1024)
    max_pixels: int = Field(40_000_000, ge=1, description="decoded size cap: bigger is a decompression bomb")
    min_side: int = Field(64, ge=1, description="images smaller than this on either side are rejected")
    content_types: list[str] = Field(
        default_factory=lambda: ["image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp", "image/tiff"]
    )
    near_duplicate_bits: int = Field(4, ge=0, le=64, description="perceptual-hash distance counted as a duplicate")
    page_load_timeout_s: float = Field(30.0, gt=0)


class FacesParams(Section):
    resolution: Literal[256, 1024] = 256
    margin: float = Field(0.5, ge=0, le=3, description="extra context around the face, as a fraction of its size")
    min_face: int = Field(64, ge=8, description="smallest face side in source pixels; smaller is rejected, not upscaled")
    multi_face: Literal["all", "largest"] = "all"
    require_eyes: bool = True
    min_neighbors: int = Field(5, ge=1, description="Haar detection confidence: neighbouring hits required")
    detect_side: int = Field(640, ge=64, description="longest side of the downscaled copy used for detection")
    max_pixels: int = Field(40_000_000, ge=1)
    workers: int = Field(0, ge=0, description="processes; 0 uses every core")


class AugmentParams(Section):
    copies: int = Field(1, ge=1, le=100)
    seed: int = 0
    preset: Literal["safe", "full"] = Field(
        "safe", description="safe: horizontal flip only (does not leak); full: every OneOf group"
    )
    group_p: float = Field(0.5, ge=0, le=1, description="probability that each OneOf group fires")
    keep_original: bool = True

    @model_validator(mode="after")
    def _safe_is_one_mirror(self) -> "AugmentParams":
        if self.preset == "safe" and self.copies != 1:
            raise ValueError("the safe preset makes exactly one mirrored copy: set copies: 1 or preset: full")
        return self


class Params(Section):
    scrape: ScrapeParams = ScrapeParams()
    faces: FacesParams = FacesParams()
    augment: AugmentParams = AugmentParams()


class ParamsError(ValueError):
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
