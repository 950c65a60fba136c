"""The one command line: `styleforge`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from styleforge.env import quiet

quiet()
app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


def _fail(message: str) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


@app.command()
def stage(
    name: str = typer.Argument(..., help="scrape | faces | augment"),
    params: Path = typer.Option(Path("params.yaml"), help="params file, in the project root"),
) -> None:
    """Run one stage by hand (this is what dvc.yaml calls)."""
    from styleforge.config import ParamsError
    from styleforge.stages import run_stage

    try:
        report = run_stage(name, root=params.parent, params_file=params.name)
    except (ParamsError, KeyError) as exc:
        _fail(str(exc.args[0] if isinstance(exc, KeyError) else exc))
    typer.echo(json.dumps(report, indent=2, default=str))


@app.command()
def dataset(
    force: bool = typer.Option(False, "--force", help="rebuild every dataset stage, changed or not"),
    root: Path = typer.Option(Path("."), help="project root (holds dvc.yaml and params.yaml)"),
) -> None:
    """Rebuild data/train from the sources in params.yaml: a Prefect flow over `dvc repro`."""
    from flows.dataset import dataset_flow
    from styleforge.config import ParamsError, load_params

    try:
        load_params(root / "params.yaml")  # fail on bad params before Prefect or DVC start
    except ParamsError as exc:
        _fail(str(exc))
    ran = dataset_flow(root=str(root), force=force)
    if any(ran.values()):
        typer.echo("ran: " + ", ".join(stage for stage, did in ran.items() if did))
    else:
        typer.echo("nothing changed: the dataset is up to date, no work done")


@app.command("sample-site")
def sample_site(port: int = typer.Option(8765, help="port on 127.0.0.1")) -> None:
    """Serve the embedded sample site (real photos from installed packages) until Ctrl-C."""
    from styleforge.samplesite import serve_forever

    serve_forever(port)


@app.command()
def demo(root: Path = typer.Option(Path("."), help="project root")) -> None:
    """The embedded default: serve the sample site, build the dataset, print the reports."""
    from styleforge.demo import run_demo

    run_demo(root)


if __name__ == "__main__":
    app()
