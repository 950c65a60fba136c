import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib import cbook
from PIL import Image
from skimage import data

from styleforge.core.config import (
    FacesParams,
    LpipsParams,
    PortraitsParams,
    ProjectionParams,
)
from styleforge.core.grid import tile_for
from styleforge.model.checkpoint import save_checkpoint
from styleforge.model.generate import to_uint8
from styleforge.model.lpips import LPIPS, MultiScalePixelDistance, perceptual_distance
from styleforge.model.project import (
    cosine_lr,
    load_latent,
    noise_regularization,
    project,
    save_latent,
    to_tensor,
)
from styleforge.tasks.faces import find_faces, load_image
from styleforge.tasks.portraits import lpips_weights
from styleforge.tasks.portraits import run as run_portraits

SMALL_VGG = ((8, 8), (8, 8), (16, 16, 16), (16, 16, 16), (16, 16, 16))  # VGG16's layout, narrow


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def lpips_files(tmp_path_factory):
    """Random VGG/LPIPS weights saved the way torchvision and LPIPS save theirs."""
    torch.manual_seed(1)
    folder = tmp_path_factory.mktemp("weights")
    model = LPIPS(SMALL_VGG)
    vgg = {f"features.{k}": v for k, v in model.vgg.features.state_dict().items()}
    vgg["classifier.0.weight"] = torch.zeros(4, 4)  # torchvision files carry the classifier too
    lins = {f"lin{k}.model.1.weight": lin.weight.abs() for k, lin in enumerate(model.lins)}
    torch.save(vgg, folder / "vgg16-test.pth")
    torch.save(lins, folder / "vgg.pth")
    return folder / "vgg16-test.pth", folder / "vgg.pth"


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_lpips_loads_torchvision_layout_and_is_a_distance(lpips_files):
    vgg, lin = lpips_files
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # real weights: no fallback warning
        settings = LpipsParams(vgg=str(vgg), lin=str(lin), vgg_sha256=_sha256(vgg)[:8], lin_sha256=_sha256(lin))
        distance, name = perceptual_distance(*lpips_weights(settings, vgg.parent))
    assert name == "lpips_vgg" and isinstance(distance, LPIPS)
    torch.manual_seed(2)
    a, b = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.allclose(distance(a, a), torch.zeros(2), atol=1e-6)
    assert torch.allclose(distance(a, b), distance(b, a))
    assert (distance(a, b) > 0).all()


def test_missing_weights_fall_back_with_one_warning(tmp_path):
    for vgg, lin in [(None, None), (str(tmp_path / "absent.pth"), str(tmp_path / "absent-lin.pth"))]:
        with pytest.warns(UserWarning, match="fallback") as caught:
            distance, name = perceptual_distance(*lpips_weights(LpipsParams(vgg=vgg, lin=lin), tmp_path))
        assert len(caught) == 1
        assert name == "pixel_multiscale" and isinstance(distance, MultiScalePixelDistance)
    a = torch.rand(1, 3, 64, 64)
    assert distance(a, a).item() == 0 and distance(a, -a).item() > 0


def test_learning_rate_ramps_up_then_cools_down():
    rates = [cosine_lr(step / 100, 0.1) for step in range(100)]
    assert rates[0] == 0 and max(rates) == pytest.approx(0.1)
    assert rates[5] == pytest.approx(0.1) and rates[-1] < 0.01
    assert all(later <= earlier for earlier, later in zip(rates[75:], rates[76:]))


def test_noise_regularization_penalises_structure_not_noise():
    torch.manual_seed(0)
    white = [torch.randn(1, 1, 32, 32)]
    smooth = [torch.nn.functional.interpolate(torch.randn(1, 1, 4, 4), size=32, mode="bilinear")]
    assert noise_regularization(white) < 0.01 * noise_regularization(smooth)


def test_projection_recovers_a_generated_image(generator, tmp_path):
    torch.manual_seed(3)
    with torch.no_grad():
        w = generator.truncate(generator.style(torch.randn(1, generator.style_dim)), 0.5, generator.mean_latent(2000))
        target, _ = generator([w], input_is_latent=True, randomize_noise=False)
    settings = ProjectionParams(steps=150, n_mean_latent=2000)
    result = project(generator, target, MultiScalePixelDistance(), **settings.model_dump(), progress=False)
    assert result.latent.shape == (1, generator.n_latent, generator.style_dim)
    assert result.distance.item() < 0.1 * result.history[0]
    assert result.distance.item() < 0.01  # images in [-1, 1]: a 0.1 RMS error at most

    path = save_latent(tmp_path / "latent.npz", result, 0, distance=result.distance[0].item())
    latent, noises = load_latent(path)
    assert torch.equal(latent, result.latent[0]) and len(noises) == generator.num_layers
    with torch.no_grad():
        again, _ = generator([latent[None]], input_is_latent=True, noise=[n[None] for n in noises])
    assert torch.allclose(again, result.images, atol=1e-5)


@pytest.mark.parametrize("w_plus", [False, True])
def test_distance_to_a_real_photo_falls_in_trend(generator, lpips_files, w_plus):
    face = np.asarray(Image.open(cbook.get_sample_data("grace_hopper.jpg")).convert("RGB"))[40:380, 130:470]
    target = to_tensor(face, generator.size)
    distance, _ = perceptual_distance(*lpips_files)
    settings = ProjectionParams(steps=100, n_mean_latent=1000, w_plus=w_plus)
    history = project(generator, target, distance, **settings.model_dump(), progress=False).history
    tenths = [np.mean(history[i : i + 10]) for i in range(0, 100, 10)]
    assert tenths[-1] < 0.8 * tenths[0]
    assert sum(later < earlier for earlier, later in zip(tenths, tenths[1:])) >= 6
    assert np.polyfit(np.arange(len(history)), history, 1)[0] < 0


def test_image_conversions_round_trip():
    rgb = data.astronaut()[:64, :64]
    assert np.array_equal(to_uint8(to_tensor(rgb, 64))[0], rgb)


def test_portraits_stage_skips_bad_photos_and_renders_the_rest(generator, tmp_path):
    config = generator.config
    for path in ("data/base/model.pt", "data/blend/model.pt"):
        save_checkpoint(tmp_path / path, config, g=generator, d=config.discriminator(), g_ema=generator)
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(data.astronaut()).save(photos / "astronaut.png")
    Image.fromarray(data.coffee()).save(photos / "coffee.png")  # no face
    (photos / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(200))  # a JPEG header, then nothing
    look = tmp_path / "data/train"
    look.mkdir(parents=True)
    Image.fromarray(data.chelsea()).save(look / "target.png")  # any image: a one-picture target look
    params = PortraitsParams(projection=ProjectionParams(steps=30, n_mean_latent=500))

    with pytest.warns(UserWarning, match="fallback"):
        report = run_portraits(params, FacesParams(margin=0.5), root=tmp_path)
    assert (report["photos"], report["portraits"], report["skipped"]) == (3, 1, 2)
    by_photo = {Path(r["photo"]).name: r for r in report["results"]}
    # nothing a face: no window at all, or only ones the faces stage refuses (a 48 px window of
    # confidence 1.5 on the cup, too small and too unsure)
    assert set(by_photo["coffee.png"]["reason"].split(",")) <= {"no_face", "too_small", "low_confidence"}
    assert by_photo["corrupt.jpg"]["reason"].startswith("bad_image:")
    assert report["distance"] == "pixel_multiscale"
    assert by_photo["astronaut.png"]["distance"] < by_photo["astronaut.png"]["start_distance"]
    assert set(by_photo["astronaut.png"]["quality"]) == {"face", "portrait_to_target", "reconstruction_to_target",
                                                        "closer"}

    out = tmp_path / "data/portraits/astronaut"
    assert {p.name for p in out.iterdir()} == {"input.png", "reconstruction.png", "portrait.png", "latent.npz"}
    crop = find_faces(load_image(photos / "astronaut.png", 10**8), FacesParams())[0][0]  # the dataset's crop
    assert np.array_equal(np.asarray(Image.open(out / "input.png")), to_uint8(to_tensor(crop.image, 32))[0])
    assert Image.open(tmp_path / "reports/portraits.png").size == (3 * tile_for(32), tile_for(32) + 14)
    assert json.loads((tmp_path / "reports/portraits.json").read_text())["portraits"] == 1
