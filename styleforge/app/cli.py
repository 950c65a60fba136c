"""styleforge: scrape a look, fine-tune StyleGAN2 on it, render blended portraits."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer

from styleforge.core.env import quiet

quiet()
app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


def _fail(message: str) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"styleforge {version('styleforge')}")
        raise typer.Exit()


@app.callback()
def _main(
    _version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True, help="print the version and exit"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="log debug lines too (stages started by dvc inherit it)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="log warnings and errors only"),
) -> None:
    import os

    from styleforge.core import logs

    if verbose or quiet:
        os.environ[logs.LEVEL_ENV] = "DEBUG" if verbose else "WARNING"
    logs.setup()


def _flows_in(root: Path):
    """Run the command's flows against the project's Prefect server (styleforge/app/server.py)."""
    from styleforge.app.server import project_server

    return project_server(root)


def _examples(*commands: str) -> str:
    """A command's help epilog; tests/test_cli.py checks that the README shows each of them."""
    return "Examples:\n\n" + "\n\n".join(commands)


@app.command(epilog=_examples("styleforge stage faces"))
def stage(
    name: str = typer.Argument(..., help="scrape | faces | augment | base | finetune | blend | portraits | evaluate"),
    params: Path = typer.Option(Path("params.yaml"), help="params file, in the project root"),
) -> None:
    """Run one stage by hand (this is what dvc.yaml calls)."""
    from styleforge.core import logs
    from styleforge.core.errors import UserError
    from styleforge.tasks.stages import UnknownStage, run_stage

    logs.setup(params.parent / logs.LOGS_DIR / f"{name}.log")  # a log file per stage, every run appended
    try:
        report = run_stage(name, root=params.parent, params_file=params.name)
    except (UserError, UnknownStage) as exc:
        logs.to_file_only("styleforge.stage", logging.ERROR, str(exc))  # printed once, below
        _fail(str(exc))
    typer.echo(json.dumps(report, indent=2, default=str))


@app.command(epilog=_examples("styleforge params", "styleforge params --defaults > params.yaml"))
def params(
    file: Path = typer.Option(Path("params.yaml"), "--params", help="params file to read"),
    defaults: bool = typer.Option(False, "--defaults", help="the schema's defaults instead of the file's values"),
) -> None:
    """Every parameter with its effective value and meaning, as params.yaml (what DVC tracks)."""
    from styleforge.core.config import Params, ParamsError, load_params, params_yaml

    try:
        values = Params() if defaults else load_params(file)
    except ParamsError as exc:
        _fail(str(exc))
    typer.echo(params_yaml(values), nl=False)


@app.command(epilog=_examples("styleforge dataset", "styleforge dataset --force"))
def dataset(
    force: bool = typer.Option(False, "--force", help="rebuild every dataset stage, changed or not"),
    root: Path = typer.Option(Path("."), help="project root (holds dvc.yaml and params.yaml)"),
) -> None:
    """Rebuild data/train from the sources in params.yaml: a Prefect flow over `dvc repro`."""
    from styleforge.core.config import ParamsError, load_params
    from styleforge.flows.dataset import dataset_flow

    try:
        load_params(root / "params.yaml")  # fail on bad params before Prefect or DVC start
    except ParamsError as exc:
        _fail(str(exc))
    with _flows_in(root):
        ran = dataset_flow(root=str(root), force=force)
    if any(ran.values()):
        typer.echo("ran: " + ", ".join(stage for stage, did in ran.items() if did))
    else:
        typer.echo("nothing changed: the dataset is up to date, no work done")


@app.command(epilog=_examples("styleforge finetune"))
def finetune(
    force: bool = typer.Option(False, "--force", help="rerun the stage even if DVC finds it up to date"),
    timeout: float | None = typer.Option(None, help="seconds before the run (its whole process group) is ended"),
    root: Path = typer.Option(Path("."), help="project root (holds dvc.yaml and params.yaml)"),
) -> None:
    """Fine-tune data/base/model.pt on data/train: a Prefect flow over `dvc repro finetune`, with retries."""
    from styleforge.core.config import ParamsError, load_params
    from styleforge.flows.finetune import finetune_flow

    try:
        load_params(root / "params.yaml")
    except ParamsError as exc:
        _fail(str(exc))
    with _flows_in(root):
        ran = finetune_flow(root=str(root), force=force, timeout_s=timeout)
    typer.echo("finetune ran: data/finetune/model.pt" if ran else "finetune is up to date: no work done")


@app.command("sample-site", epilog=_examples("styleforge sample-site"))
def sample_site(port: int = typer.Option(8765, help="port on 127.0.0.1")) -> None:
    """Serve the embedded sample site (real photos from installed packages) until Ctrl-C."""
    from styleforge.app.samplesite import serve_forever

    serve_forever(port)


@app.command(epilog=_examples("styleforge demo"))
def demo(root: Path = typer.Option(Path("."), help="project root")) -> None:
    """The embedded default: serve the sample site, build the dataset, print the reports."""
    from styleforge.app.demo import run_demo

    with _flows_in(root):
        run_demo(root)


@app.command(epilog=_examples("styleforge report", "styleforge report --root ../night --out out/night.html"))
def report(
    root: Path = typer.Option(Path("."), help="project root: the run's reports/, data/ and dvclive/"),
    out: Path | None = typer.Option(None, help="the run's page [default: ROOT/reports/index.html]"),
) -> None:
    """One page for the run (what the pipeline writes at its end) and ROOT/reports/history.html."""
    from styleforge.flows.gallery import write_pages

    page, history = write_pages(root, out)
    typer.echo(f"{page}\n{history}")


def _nightly_params(root: Path):
    from styleforge.core.config import ParamsError, load_params

    try:
        return load_params(root / "params.yaml").nightly  # fail on bad params before Prefect or DVC start
    except ParamsError as exc:
        _fail(str(exc))


@app.command(epilog=_examples("styleforge nightly"))
def nightly(root: Path = typer.Option(Path("."), help="project root: a git + DVC workspace")) -> None:
    """One nightly run now (the flow the schedule runs): scrape, rebuild, gate, publish or keep."""
    _nightly_params(root)
    from styleforge.flows.nightly import WorkspaceBusy, nightly_flow
    from styleforge.flows.repro import StageTimedOut

    try:
        with _flows_in(root):
            summary = nightly_flow(root=str(root))
    except WorkspaceBusy as exc:
        _fail(str(exc))
    except StageTimedOut as exc:  # not the user's mistake (exit 1), but one clear line, not a traceback
        typer.secho(f"the night stopped at its deadline (nightly.deadline_h): {str(exc).splitlines()[0]}",
                    fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    verb = "published" if summary["published"] else "kept"
    typer.echo(f"{verb} {summary['release'] or 'no release'}: {summary['reason']}")


@app.command(epilog=_examples("styleforge schedule"))
def schedule(
    root: Path = typer.Option(Path("."), help="project root: a git + DVC workspace"),
    port: int | None = typer.Option(None, help="port of `styleforge server` on 127.0.0.1 [default: PREFECT_API_URL, else 4200]"),
) -> None:
    """Serve the nightly deployment (nightly.cron in nightly.timezone, one run at a time) until Ctrl-C."""
    import os

    from styleforge.app import server as prefect_server

    params = _nightly_params(root)
    os.environ.setdefault("PREFECT_HOME", str(prefect_server.project_home(root)))
    if port is not None or "PREFECT_API_URL" not in os.environ:
        os.environ["PREFECT_API_URL"] = prefect_server.api_url(port or prefect_server.DEFAULT_PORT)
    url = os.environ["PREFECT_API_URL"]
    if not prefect_server.is_up(url):
        _fail(f"no Prefect server at {url}: start one with `styleforge server` (schedules need a real server)")
    from styleforge.flows.nightly import DEPLOYMENT_NAME, deployment

    try:
        nightly_run = deployment(root, params)
    except ValueError as exc:  # Prefect checks the cron fields
        _fail(f"nightly.cron: {exc}")
    from prefect import serve

    typer.echo(f"serving nightly/{DEPLOYMENT_NAME}: '{params.cron}' in {params.timezone}, against {url}")
    serve(nightly_run)


@app.command(epilog=_examples("styleforge server"))
def server(
    root: Path = typer.Option(Path("."), help="project root: the database goes to ROOT/.prefect"),
    port: int = typer.Option(4200, help="port on 127.0.0.1"),
) -> None:
    """Run a Prefect server on 127.0.0.1 (SQLite in the project's PREFECT_HOME, analytics off)."""
    from styleforge.app.server import api_url, exec_server, project_home

    typer.echo(f"Prefect server for {root.resolve()}: set PREFECT_API_URL={api_url(port)} in other shells")
    exec_server(project_home(root), port)


def _span(text: str, what: str) -> tuple[int, int]:
    try:
        start, stop = (int(part) for part in text.split(":"))
    except ValueError:
        _fail(f"{what}: expected START:STOP, e.g. 0:4, got {text!r}")
    return start, stop


MAX_SEED = 2**32 - 1  # numpy's RandomState, which draws z from a seed, takes 0 .. 2**32 - 1


def _seed_list(text: str, option: str, required: bool = True) -> list[int]:
    """The seeds of option as NVIDIA's scripts take them: numbers and inclusive ranges, comma-
    separated (0-7,12 is 0..7 and 12). '' is none, which fails where seeds are required."""
    seeds: list[int] = []
    for part in (part.strip() for part in text.split(",")):
        if not part:
            continue
        first, dash, last = part.partition("-")
        try:
            start = int(first)
            stop = int(last) if dash else start
        except ValueError:
            _fail(f"{option}: expected seeds like 0,5,9 or ranges like 0-7,12, got {text!r}")
        if not 0 <= start <= stop <= MAX_SEED:
            _fail(f"{option}: {part!r} is not a seed from 0 to {MAX_SEED}, or a range upward between them")
        seeds.extend(range(start, stop + 1))
    if required and not seeds:
        _fail(f"{option}: no seeds given")
    return seeds


def _projected(path: Path, generator):
    """The W+ latents [N, n_latent, D] in a projection file (ours or NVIDIA's), on the generator's device."""
    from styleforge.model.project import LatentFileError, load_projected

    try:
        return load_projected(path, generator.n_latent, generator.style_dim).to(generator.w_avg.device)
    except LatentFileError as exc:
        _fail(str(exc))


def _latents(generator, seeds: str, option: str, latent_files: list[Path], truncation: float):
    """W+ latents of the seeds in option and of projected .npz files, in that order; the seeds may
    be left out where latent files are given."""
    import torch

    from styleforge.model.generate import seed_latents

    seed_list = _seed_list(seeds, option, required=not latent_files)
    parts = [seed_latents(generator, seed_list, truncation)] if seed_list else []
    parts += [_projected(path, generator) for path in latent_files]
    return torch.cat(parts)


@app.command(epilog=_examples("styleforge portraits me.jpg --out out/portraits"))
def portraits(
    photos: list[Path] = typer.Argument(..., help="photos to render"),
    out: Path = typer.Option(..., "--out", help="folder for the portraits, the contact sheet and the report"),
    params: Path = typer.Option(Path("params.yaml"), help="params file: its faces and portraits sections apply"),
    base: Path = typer.Option(Path("data/base/model.pt"), help="model the photos are projected into"),
    blend: Path = typer.Option(Path("data/blend/model.pt"), help="model the portraits are rendered by"),
) -> None:
    """The portraits stage on the given photos, outside DVC: OUT/<photo>/, OUT/portraits.png and .json."""
    from styleforge.core.config import ParamsError, load_params
    from styleforge.core.io import atomic_write_json
    from styleforge.tasks.portraits import make_portraits

    try:
        settings = load_params(params)
    except ParamsError as exc:
        _fail(str(exc))
    missing = [str(path) for path in (base, blend) if not path.is_file()]
    if missing:
        _fail(f"no model at {', '.join(missing)}: run `dvc repro blend` first, or pass --base/--blend")
    report = make_portraits(
        photos, settings.portraits, settings.faces, base_model=base, blend_model=blend, out_dir=out,
        sheet_path=out / "portraits.png", lpips_cache=params.parent / settings.portraits.lpips.cache_dir,
        look=look if (look := params.parent / settings.portraits.look).is_dir() else None,
    )
    atomic_write_json(out / "portraits.json", {"stage": "portraits", **report})
    typer.echo(f"{report['portraits']} of {report['photos']} photos rendered into {out}")
    if report["skipped"]:
        typer.echo(f"skipped: {report['skip_reasons']} (see {out / 'portraits.json'})")


@app.command(epilog=_examples(
    "styleforge edit --latent data/portraits/astronaut/latent.npz --out reports/edit.png",
    "styleforge edit --seeds 0-3 --latent out/projected_w.npz --directions 0:3 --out out/edit.png",
))
def edit(
    seeds: str = typer.Option("0,1,2", help="seeds to edit, e.g. 0-3,7 ('' for none)"),
    latent: list[Path] = typer.Option([], help="projected latent: portraits' latent.npz or NVIDIA's projected_w.npz (repeatable)"),
    model: Path = typer.Option(Path("data/blend/model.pt"), help="the model that renders"),
    sefa: Path = typer.Option(Path("data/blend/sefa.npz"), help="SeFa directions the blend stage saved"),
    layers: str | None = typer.Option(None, help="START:STOP styled convs: factorise MODEL there, not read SEFA"),
    directions: str = typer.Option("0:5", help="direction indices START:STOP, strongest first"),
    degree: float = typer.Option(5.0, help="largest move along a direction, in W units"),
    steps: int = typer.Option(5, min=2, help="columns from -DEGREE to +DEGREE"),
    truncation: float = typer.Option(0.7, help="psi for the seeds"),
    out: Path = typer.Option(Path("reports/edit.png"), help="the grid: a row per latent and direction"),
) -> None:
    """SeFa edits: each direction at evenly spaced degrees, for seeds and projected photos."""
    import numpy as np

    from styleforge.core.grid import save_sheet, tile_for
    from styleforge.model.checkpoint import CheckpointError, load_generator
    from styleforge.model.sefa import Directions, edit_grid, factorize

    first, stop = _span(directions, "--directions")
    try:
        generator = load_generator(model)
        chosen = factorize(generator, stop, _span(layers, "--layers")) if layers else Directions.load(sefa)
    except (CheckpointError, FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    if not 0 <= first < stop <= len(chosen.vectors):
        _fail(f"--directions {directions}: {len(chosen.vectors)} directions available")
    latents = _latents(generator, seeds, "--seeds", latent, truncation)
    degrees = [float(d) for d in np.linspace(-degree, degree, steps)]
    images, captions = edit_grid(generator, latents, chosen, list(range(first, stop)), degrees)
    save_sheet(out, images, captions, tile=tile_for(generator.size), cols=steps)
    typer.echo(f"{out}: {len(latents)} latents x directions {first}..{stop - 1} on layers {chosen.layers}")


@app.command(epilog=_examples(
    "styleforge mix --checkpoint data/blend/model.pt --rows 0,1 --cols 2,3 --out out/mix.png",
    "styleforge mix --rows 0-3 --latent data/portraits/astronaut/latent.npz --cols 10-13 --out out/mix.png",
))
def mix(
    rows: str = typer.Option("", help="row seeds, e.g. 0-3,7: they keep their other styles"),
    latent: list[Path] = typer.Option([], help="projected latent (portraits' latent.npz or NVIDIA's projected_w.npz): one more row (repeatable)"),
    cols: str = typer.Option("0,1,2,3", help="column seeds, e.g. 0-3: they give the STYLES entries"),
    styles: str = typer.Option("0:7", help="W+ entries START:STOP taken from the column (0:7 = up to 32x32, NVIDIA's)"),
    checkpoint: Path = typer.Option(Path("data/blend/model.pt"), help="the model that renders"),
    truncation: float = typer.Option(0.7, help="psi for the seeds"),
    out: Path = typer.Option(Path("reports/mix.png"), help="the grid, plain columns on top and plain rows at the side"),
) -> None:
    """Style-mixing grid: rows (seeds and/or projected photos) with each column seed's STYLES."""
    from styleforge.core.grid import save_sheet, tile_for
    from styleforge.model.checkpoint import CheckpointError, load_generator
    from styleforge.model.sefa import mix_grid

    try:
        generator = load_generator(checkpoint)
    except CheckpointError as exc:
        _fail(str(exc))
    row_latents = _latents(generator, rows, "--rows", latent, truncation)
    col_latents = _latents(generator, cols, "--cols", [], truncation)
    try:
        images, columns = mix_grid(generator, row_latents, col_latents, _span(styles, "--styles"))
    except ValueError as exc:
        _fail(str(exc))
    save_sheet(out, images, None, tile=tile_for(generator.size), cols=columns)
    typer.echo(f"{out}: {len(row_latents)} rows x {len(col_latents)} seeds, W+ {styles} from the seeds")


def _device(name: str | None) -> str:
    import torch

    return name or ("cuda" if torch.cuda.is_available() else "cpu")


@app.command(epilog=_examples(
    "styleforge generate --checkpoint data/finetune/model.pt --seeds 0,1,2 --out out/",
    "styleforge generate --checkpoint data/finetune/model.pt --seeds 0-7,12 --truncation 0.7 --out out/",
))
def generate(
    checkpoint: Path = typer.Option(..., help="our checkpoint or a rosinality .pt"),
    out: Path = typer.Option(..., "--out", help="folder for one PNG per latent and grid.png"),
    seeds: str | None = typer.Option(None, help="seeds, e.g. 0-7,12 (z as NVIDIA's generate.py draws it)"),
    z: Path | None = typer.Option(None, help=".npy of z latents [N, style_dim], instead of --seeds"),
    truncation: float = typer.Option(1.0, help="psi: 1 = none, 0 = the average image"),
    noise: str = typer.Option("const", help="random (from each seed) | const (stored buffers) | none"),
    device: str | None = typer.Option(None, help="cpu or cuda (default: cuda if available)"),
) -> None:
    """Render images from a checkpoint's g_ema: OUT/seedNNNN.png (or zNNNN.png) and OUT/grid.png."""
    import numpy as np

    from styleforge.model.checkpoint import CheckpointError
    from styleforge.model.generate import generate as render_latents

    if (seeds is None) == (z is None):
        _fail("give --seeds or --z (one of them)")
    try:
        latents = np.load(z) if z is not None else None
        paths = render_latents(
            checkpoint, out, seeds=_seed_list(seeds, "--seeds") if seeds is not None else None, z=latents,
            truncation=truncation, noise_mode=noise, device=_device(device),
        )
    except (CheckpointError, OSError, ValueError) as exc:
        _fail(str(exc))
    typer.echo(f"{len(paths) - 1} images and {paths[-1]} written")


def _grid(text: str) -> tuple[int, int]:
    """--grid COLSxROWS, as NVIDIA's gen_video.py reads it (4x2: four across, two down)."""
    cols, x, rows = text.lower().partition("x")
    try:
        shape = int(cols), int(rows)
    except ValueError:
        shape = (0, 0)
    if not x or min(shape) < 1:
        _fail(f"--grid: expected COLSxROWS, e.g. 2x2, got {text!r}")
    return shape


def _shares(keys: list, cells: int, option: str) -> list[list]:
    """keys split in order among the grid's cells (NVIDIA's gen_video.py: cell 0 takes the first
    len/cells, cell 1 the next ...), each cell at least two."""
    if len(keys) % cells:
        _fail(f"{option}: {len(keys)} keyframes do not split evenly among {cells} grid cells")
    share = len(keys) // cells
    if share < 2:
        _fail(f"{option}: a walk needs at least 2 keyframes per grid cell, got {share}")
    return [keys[i * share : (i + 1) * share] for i in range(cells)]


def _load_generator(path: Path, device: str):
    from styleforge.model.checkpoint import CheckpointError, load_generator

    try:
        return load_generator(path, map_location=device)
    except CheckpointError as exc:
        _fail(str(exc))


@app.command(epilog=_examples(
    "styleforge walk --checkpoint data/finetune/model.pt --seeds 0,5,9 --loop --out out/walk.mp4",
    "styleforge walk --checkpoint data/finetune/model.pt --seeds 0-15 --grid 2x2 --frames 240 --out out/grid.mp4",
    "styleforge walk --latents data/portraits/astronaut/latent.npz,data/portraits/grace_hopper/latent.npz --out out/photos.gif",
    "styleforge walk --morph data/portraits/astronaut/latent.npz --frames 90 --out out/morph.webp",
    "styleforge walk --checkpoint data/finetune/model.pt --seeds 0,9 --frames 30 --out out/frames/",
))
def walk(
    out: str = typer.Option(..., "--out", help="walk.mp4 (H.264), .webp or .gif; or a folder (DIR/) for numbered PNG frames"),
    seeds: str | None = typer.Option(None, help="keyframe seeds in order, e.g. 0,5,9 or 0-7 (shared out in order among --grid cells)"),
    latents: str | None = typer.Option(None, help="keyframes from projected photos: comma-separated portraits latent.npz or NVIDIA projected_w.npz"),
    morph: Path | None = typer.Option(None, help="one projected photo, rendered by --base, then the blends cut by cut, then --finetuned"),
    checkpoint: Path = typer.Option(Path("data/blend/model.pt"), help="the model that renders --seeds and --latents"),
    base: Path = typer.Option(Path("data/base/model.pt"), help="--morph: the model it starts from"),
    finetuned: Path = typer.Option(Path("data/finetune/model.pt"), help="--morph: the model it ends on"),
    reverse: bool = typer.Option(False, "--reverse", help="--morph through Toonify's blends: coarse layers change first"),
    frames: int = typer.Option(60, min=2, help="frames in all"),
    fps: float = typer.Option(30.0, help="frames per second"),
    truncation: float = typer.Option(0.7, help="psi for the seeds"),
    space: str = typer.Option("w", help="w: lerp in W, as NVIDIA's gen_video (smoother than Z) | z: slerp between the seeds' z"),
    loop: bool = typer.Option(False, "--loop", help="go on from the last keyframe back to the first: a seamless loop"),
    grid: str = typer.Option("1x1", help="COLSxROWS walks side by side, each over its own share of the keyframes"),
    noise: str = typer.Option("const", help="const (the model's stored noise, as generate's default) | none"),
    batch: int = typer.Option(8, min=1, help="frames rendered per call: all the walk ever holds, however long"),
    device: str | None = typer.Option(None, help="cpu or cuda (default: cuda if available)"),
) -> None:
    """A video walking through latent space: between seeds, between projected photos, or the
    portrait morph (base model, blends, fine-tuned model). Frames go to the encoder as they are
    rendered; a frame on a seed is the image `generate --noise const` makes of it."""
    from tqdm import tqdm

    from styleforge.core.video import VideoError, output_kind, write_frames
    from styleforge.model.walk import NOISE_MODES, SPACES, Keyframes, morph_frames, seed_keyframes, walk_frames

    given = [name for name, value in (("--seeds", seeds), ("--latents", latents), ("--morph", morph)) if value is not None]
    if len(given) != 1:
        _fail(f"give one of --seeds, --latents or --morph, got {' and '.join(given) or 'none'}")
    try:
        output_kind(out)
    except VideoError as exc:
        _fail(str(exc))
    if fps <= 0:
        _fail(f"--fps: must be above 0, got {fps:g}")
    if space not in SPACES or noise not in NOISE_MODES:
        _fail(f"--space takes {' or '.join(SPACES)}, --noise {' or '.join(NOISE_MODES)}: got {space!r}, {noise!r}")
    if space == "z" and seeds is None:
        _fail("--space z: only seeds have a z; walk projected photos in W")
    cols, rows = _grid(grid)
    device = _device(device)

    if morph is not None:
        if cols * rows != 1:
            _fail("--grid: a morph is one photo")
        g = _load_generator(base, device)
        end = _load_generator(finetuned, device)
        if end.config != g.config:
            _fail(f"{finetuned}: not the same architecture as {base} ({end.config} vs {g.config})")
        latent = _projected(morph, g)
        if len(latent) != 1:
            _fail(f"--morph {morph}: holds {len(latent)} latents; a morph takes one")
        stream = morph_frames(g, end, latent[0], frames, loop=loop, reverse=reverse, noise_mode=noise)
    else:
        g = _load_generator(checkpoint, device)
        if seeds is not None:
            shares = _shares(_seed_list(seeds, "--seeds"), cols * rows, "--seeds")
            cells = [seed_keyframes(g, share, truncation, space) for share in shares]
        else:
            files = [Path(name.strip()) for name in latents.split(",") if name.strip()]
            keys = [latent for path in files for latent in _projected(path, g)]
            cells = [Keyframes(share) for share in _shares(keys, cols * rows, "--latents")]
        stream = walk_frames(g, cells, frames, loop=loop, truncation=truncation, noise_mode=noise, batch=batch, cols=cols)

    bar = tqdm(stream, total=frames, unit="frame", desc="walk", disable=None)  # disable=None: only on a terminal
    try:
        written = write_frames(out, bar, fps, total=frames)
    except VideoError as exc:
        _fail(str(exc))
    typer.echo(f"{written}: {frames} frames of {cols * g.size}x{rows * g.size} at {fps:g} fps")


@app.command(epilog=_examples("styleforge convert network-snapshot.pkl data/base/model.pt"))
def convert(
    src: Path = typer.Argument(..., help="stylegan2-ada-pytorch network pickle (.pkl)"),
    dst: Path = typer.Argument(..., help="our checkpoint (.pt) to write"),
) -> None:
    """Convert an NVIDIA pickle without running its code (a restricted unpickler reads it)."""
    import pickle

    from styleforge.model.checkpoint import CheckpointError
    from styleforge.model.convert import convert_pickle

    try:
        summary = convert_pickle(src, dst)
    except (CheckpointError, pickle.UnpicklingError, OSError) as exc:
        _fail(str(exc) if str(src) in str(exc) else f"{src}: {exc}")  # the loaders name the file themselves
    typer.echo(json.dumps({"written": str(dst), **summary}, indent=2))


@app.command(epilog=_examples("styleforge doctor", "styleforge doctor --json --seconds 2 --recheck"))
def doctor(
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
    seconds: float = typer.Option(10.0, min=0, help="length of the throughput sample; 0 skips it"),
    device: str | None = typer.Option(None, help="cpu or cuda for the sample [default: cuda if available]"),
    recheck: bool = typer.Option(False, "--recheck", help="check the kernels again, ignoring stored verdicts"),
) -> None:
    """Device, versions, which implementation each op runs and why, and a throughput sample."""
    import torch

    from styleforge.app.doctor import describe, diagnose

    if device not in (None, "cpu", "cuda"):
        _fail(f"--device: expected cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        _fail("--device cuda: torch sees no CUDA device")
    report = diagnose(_device(device), seconds=seconds, recheck=recheck)
    typer.echo(json.dumps(report, indent=2) if as_json else describe(report))


if __name__ == "__main__":
    app()
