"""blend: data/base + data/finetune -> data/blend/model.pt by layer swapping (model/blend.py).

Also written: reports/blend_sweep.png, the same seeds rendered by the base model, by blends cut
at 8, 16, ... (below the model's size) and by the fine-tuned model, so the cut can be chosen by
eye; data/blend/sefa.npz, the blended model's SeFa directions for `styleforge edit`; and
reports/blend.json.
"""

from __future__ import annotations

from pathlib import Path

from styleforge.core.config import BlendParams
from styleforge.core.grid import save_sheet, tile_for
from styleforge.core.reports import timed, write_report
from styleforge.tasks.paths import BASE_MODEL, BLEND_MODEL, FINETUNED_MODEL, SEFA_FILE, SWEEP_SHEET

SWEEP_RESOLUTIONS = (8, 16, 32, 64, 128)


def run(params: BlendParams, root: Path = Path(".")) -> dict:
    from styleforge.model.blend import (
        blend_generators,  # the model code is heavy; import it only to run
    )
    from styleforge.model.checkpoint import (
        load_checkpoint,
        load_generator,
        save_checkpoint,
    )
    from styleforge.model.sefa import factorize

    report: dict = {}
    with timed(report):
        base = load_generator(root / BASE_MODEL)
        finetuned = load_checkpoint(root / FINETUNED_MODEL)
        blended, from_finetuned = blend_generators(
            base, finetuned.g_ema, params.swap_res, params.blend_width, params.reverse
        )
        # Our format stores a D; the fine-tuned one is the critic of the look the blend renders.
        save_checkpoint(root / BLEND_MODEL, blended.config, g=blended, d=finetuned.d, g_ema=blended)
        directions = factorize(blended, params.sefa_components, params.sefa_layers)
        directions.save(root / SEFA_FILE)
        columns = write_sweep(base, finetuned.g_ema, params, root / SWEEP_SHEET)
        report.update(
            size=base.config.size,
            swap_res=params.swap_res,
            blend_width=params.blend_width,
            reverse=params.reverse,
            fraction_from_finetuned={str(res): fraction for res, fraction in from_finetuned.items()},
            sweep_columns=columns,
            sefa_layers=list(directions.layers),
            sefa_eigenvalues=[round(float(v), 4) for v in directions.eigenvalues],
        )
    write_report("blend", report, root)
    return {"stage": "blend", **report}


def write_sweep(base, finetuned, params: BlendParams, path: Path) -> list[str]:
    """Rows: params.sweep_seeds; columns: base, each cut below the model's size, fine-tuned."""
    from styleforge.model.blend import blend_generators
    from styleforge.model.generate import render_seeds

    size, seeds, psi = base.config.size, params.sweep_seeds, params.truncation
    columns = {"base": render_seeds(base, seeds, psi)}
    for res in (r for r in SWEEP_RESOLUTIONS if r < size):  # one blend alive at a time: 1024² models are big
        cut = blend_generators(base, finetuned, res, params.blend_width, params.reverse)[0]
        columns[f"cut {res}"] = render_seeds(cut, seeds, psi)
    columns["finetuned"] = render_seeds(finetuned, seeds, psi)
    images, captions = [], []
    for row, seed in enumerate(seeds):
        for name, rendered in columns.items():
            images.append(rendered[row])
            captions.append(f"{seed}: {name}")
    save_sheet(path, images, captions, tile=tile_for(size), cols=len(columns))
    return list(columns)
