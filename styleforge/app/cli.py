"""styleforge: scrape a look, fine-tune StyleGAN2 on it, render blended portraits."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from styleforge.core.env import quiet

quiet()
app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


def _fail(message: str) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


@app.command()
def stage(
    name: str = typer.Argument(..., help="scrape | faces | augment | base | finetune | blend | portraits | evaluate"),
    params: Path = typer.Option(Path("params.yaml"), help="params file, in the project root"),
) -> None:
    """Run one stage by hand (this is what dvc.yaml calls)."""
    from styleforge.core.errors import UserError
    from styleforge.tasks.stages import UnknownStage, run_stage

    try:
        report = run_stage(name, root=params.parent, params_file=params.name)
    except (UserError, UnknownStage) as exc:
        _fail(str(exc))
    typer.echo(json.dumps(report, indent=2, default=str))


@app.command()
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
    ran = dataset_flow(root=str(root), force=force)
    if any(ran.values()):
        typer.echo("ran: " + ", ".join(stage for stage, did in ran.items() if did))
    else:
        typer.echo("nothing changed: the dataset is up to date, no work done")


@app.command()
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
    ran = finetune_flow(root=str(root), force=force, timeout_s=timeout)
    typer.echo("finetune ran: data/finetune/model.pt" if ran else "finetune is up to date: no work done")


@app.command("sample-site")
def sample_site(port: int = typer.Option(8765, help="port on 127.0.0.1")) -> None:
    """Serve the embedded sample site (real photos from installed packages) until Ctrl-C."""
    from styleforge.app.samplesite import serve_forever

    serve_forever(port)


@app.command()
def demo(root: Path = typer.Option(Path("."), help="project root")) -> None:
    """The embedded default: serve the sample site, build the dataset, print the reports."""
    from styleforge.app.demo import run_demo

    run_demo(root)


def _nightly_params(root: Path):
    from styleforge.core.config import ParamsError, load_params

    try:
        return load_params(root / "params.yaml").nightly  # fail on bad params before Prefect or DVC start
    except ParamsError as exc:
        _fail(str(exc))


@app.command()
def nightly(root: Path = typer.Option(Path("."), help="project root: a git + DVC workspace")) -> None:
    """One nightly run now (the flow the schedule runs): scrape, rebuild, gate, publish or keep."""
    _nightly_params(root)
    from styleforge.flows.nightly import WorkspaceBusy, nightly_flow

    try:
        summary = nightly_flow(root=str(root))
    except WorkspaceBusy as exc:
        _fail(str(exc))
    verb = "published" if summary["published"] else "kept"
    typer.echo(f"{verb} {summary['release'] or 'no release'}: {summary['reason']}")


@app.command()
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
    try:
        deployment = prefect_server.nightly_deployment(root, params)
    except ValueError as exc:  # Prefect checks the cron fields
        _fail(f"nightly.cron: {exc}")
    from prefect import serve

    typer.echo(f"serving nightly/{prefect_server.DEPLOYMENT_NAME}: '{params.cron}' in {params.timezone}, against {url}")
    serve(deployment)


@app.command()
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


def _seed_list(text: str, option: str, required: bool = True) -> list[int]:
    """The comma-separated seeds of option; '' is none, which fails where seeds are required."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        _fail(f"{option}: expected integers separated by commas, got {text!r}")
    if required and not seeds:
        _fail(f"{option}: no seeds given")
    return seeds


def _latents(generator, seeds: str, option: str, latent_files: list[Path], truncation: float):
    """W+ latents of the seeds in option (comma-separated) and of projected .npz files, in that order;
    the seeds may be left out where latent files are given."""
    import torch

    from styleforge.model.project import load_latent
    from styleforge.model.sefa import seed_latents

    seed_list = _seed_list(seeds, option, required=not latent_files)
    parts = [seed_latents(generator, seed_list, truncation)] if seed_list else []
    for path in latent_files:
        try:
            latent = load_latent(path)[0]
        except (OSError, KeyError, ValueError) as exc:  # missing, not an .npz, or no `latent` in it
            _fail(f"{path}: not a projected latent from `styleforge portraits`: {exc}")
        if latent.shape != (generator.n_latent, generator.style_dim):
            expected = [generator.n_latent, generator.style_dim]
            _fail(f"{path}: latent {list(latent.shape)} does not fit this model, which takes {expected}")
        parts.append(latent[None].to(generator.w_avg.device))
    return torch.cat(parts)


@app.command()
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
    )
    atomic_write_json(out / "portraits.json", {"stage": "portraits", **report})
    typer.echo(f"{report['portraits']} of {report['photos']} photos rendered into {out}")
    if report["skipped"]:
        typer.echo(f"skipped: {report['skip_reasons']} (see {out / 'portraits.json'})")


@app.command()
def edit(
    seeds: str = typer.Option("0,1,2", help="seeds to edit, comma-separated ('' for none)"),
    latent: list[Path] = typer.Option([], help="projected latent .npz from portraits (repeatable)"),
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


@app.command()
def mix(
    rows: str = typer.Option("", help="row seeds, comma-separated: they keep their other styles"),
    latent: list[Path] = typer.Option([], help="projected latent .npz from portraits: one more row (repeatable)"),
    cols: str = typer.Option("0,1,2,3", help="column seeds, comma-separated: they give the STYLES entries"),
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


@app.command()
def generate(
    checkpoint: Path = typer.Option(..., help="our checkpoint or a rosinality .pt"),
    out: Path = typer.Option(..., "--out", help="folder for one PNG per latent and grid.png"),
    seeds: str | None = typer.Option(None, help="seeds, comma-separated (z as NVIDIA's generate.py draws it)"),
    z: Path | None = typer.Option(None, help=".npy of z latents [N, style_dim], instead of --seeds"),
    truncation: float = typer.Option(1.0, help="psi: 1 = none, 0 = the average image"),
    noise: str = typer.Option("const", help="random (from each seed) | const (stored buffers) | none"),
    device: str | None = typer.Option(None, help="cpu or cuda [default: cuda if available]"),
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


@app.command()
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
        _fail(f"{src}: {exc}")
    typer.echo(json.dumps({"written": str(dst), **summary}, indent=2))


if __name__ == "__main__":
    app()
