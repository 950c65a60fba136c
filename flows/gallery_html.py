"""The HTML of the gallery pages (flows/gallery.py fills them): Jinja2 templates and their style.

The style is inlined into every page and no page has a script: a page must open from the file
system and from any HTTP server alike, asking nothing of anywhere else. Fonts are the system's.
"""

from __future__ import annotations

from jinja2 import DictLoader, Environment, StrictUndefined
from markupsafe import Markup

STYLE = Markup("""
:root { --ink: #1d1d1f; --muted: #6b6b70; --line: #dcdce0; --mark: #e8a000; --soft: #f6f6f8; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
       max-width: 1200px; margin: 0 auto; padding: 0 20px 48px; }
header { border-bottom: 1px solid var(--line); padding-bottom: 8px; }
header p { margin: 4px 0; color: var(--muted); }
nav a { margin-right: 12px; white-space: nowrap; }
h2 { margin-top: 36px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h3 { margin: 20px 0 6px; font-size: 15px; }
.missing { color: var(--muted); font-style: italic; margin: 6px 0; }
.release { background: var(--soft); border-left: 4px solid var(--mark); padding: 6px 10px; color: var(--ink); }
figure { display: inline-block; vertical-align: top; max-width: 100%; margin: 8px 16px 8px 0; }
figure img, video { display: block; max-width: 100%; height: auto; border: 1px solid var(--line); }
video { min-width: 256px; image-rendering: pixelated; }  /* a tiny model's walk is seen, not squinted at */
img.grid { image-rendering: pixelated; }
figcaption { color: var(--muted); font-size: 12px; margin-top: 2px; max-width: 60em; }
table { border-collapse: collapse; margin: 6px 24px 6px 0; }
.tables table { display: inline-table; vertical-align: top; }
th, td { border-bottom: 1px solid var(--line); padding: 3px 12px 3px 0; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
caption { text-align: left; font-weight: 600; padding-bottom: 2px; }
.marked { position: relative; width: fit-content; max-width: 100%; }  /* exactly the picture: the outline is placed in % of it */
.marked img { display: block; }
.marked .cut { position: absolute; top: 0; bottom: 0; outline: 3px solid var(--mark); outline-offset: -3px;
               pointer-events: none; }
.chart svg { max-width: 100%; height: auto; }
.photo img { width: 112px; }
.thumbs img { height: 72px; width: auto; margin: 0 4px 0 0; border: 1px solid var(--line); image-rendering: pixelated; }
tr.picked td { background: #fff4d6; }
td.tag { white-space: nowrap; }
code { background: var(--soft); padding: 0 3px; }
""")

MACROS = """
{%- macro missing(text) %}<p class="missing">{{ text }}</p>{% endmacro -%}

{%- macro picture(p) -%}
{%- if p.src -%}
<figure><img src="{{ p.src }}" alt="{{ p.caption }}"{% if p.grid %} class="grid"{% endif %}>
<figcaption>{{ p.caption }}</figcaption></figure>
{%- else -%}{{ missing(p.missing) }}{%- endif -%}
{%- endmacro -%}

{%- macro figures(table) -%}
<table>{% if table.caption %}<caption>{{ table.caption }}</caption>{% endif %}
{% for name, value in table.rows %}<tr><th>{{ name }}</th><td class="num">{{ value }}</td></tr>
{% endfor %}</table>
{%- endmacro -%}
"""

HEAD = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
{# an empty icon: else a browser asks the server for /favicon.ico, outside what the page holds #}
<link rel="icon" href="data:,">
<title>{{ title }}</title>
<style>{{ style }}</style>
</head>
"""

RUN_PAGE = HEAD + """{% from "macros" import missing, picture, figures %}
<body>
<header>
<h1>{{ title }}</h1>
{% if release %}<p class="release"><b>{{ release.tag }}</b>: published. {{ release.reason }}</p>{% endif %}
<p>Written {{ written }} from <code>{{ root }}</code>.
{%- if previous %} Compared with the previous release, <b>{{ previous }}</b>.{% else %} No earlier nightly release to compare with.{% endif %}
{%- if history %} <a href="{{ history }}">Every nightly release</a>.{% endif %}</p>
<nav>{% for id, name in sections %}<a href="#{{ id }}">{{ name }}</a>{% endfor %}</nav>
</header>

<section id="dataset"><h2>Dataset</h2>
{% if dataset.missing %}{{ missing(dataset.missing) }}{% else %}
<div class="tables">{% for table in dataset.tables %}{{ figures(table) }}{% endfor %}</div>
{% for line in dataset.lines %}{{ missing(line) }}{% endfor %}
{% for p in dataset.pictures %}{{ picture(p) }}{% endfor %}
{% endif %}
</section>

<section id="training"><h2>Training</h2>
{% for run in training %}<h3>{{ run.name }}</h3>
{% if run.chart %}<div class="chart">{{ run.chart }}</div>{% else %}{{ missing(run.missing) }}{% endif %}
{% if run.samples %}{{ picture(run.samples) }}{% endif %}
{% endfor %}
</section>

<section id="finetune"><h2>Base vs fine-tuned</h2>
{% if finetune.missing %}{{ missing(finetune.missing) }}{% else %}
{% for p in finetune.pictures %}{{ picture(p) }}{% endfor %}
{% endif %}
</section>

<section id="blend"><h2>Blend sweep</h2>
{% if blend.missing %}{{ missing(blend.missing) }}{% else %}
{% if blend.sweep.src %}
<figure><div class="marked"><img src="{{ blend.sweep.src }}" alt="{{ blend.sweep.caption }}" class="grid">
{% if blend.cut %}<span class="cut" style="left: {{ blend.cut.left }}%; width: {{ blend.cut.width }}%"></span>{% endif %}
</div><figcaption>{{ blend.sweep.caption }}</figcaption></figure>
{% else %}{{ missing(blend.sweep.missing) }}{% endif %}
{% for line in blend.lines %}{{ missing(line) }}{% endfor %}
{% endif %}
</section>

<section id="portraits"><h2>Portraits</h2>
{% if portraits.missing %}{{ missing(portraits.missing) }}{% else %}
{{ picture(portraits.sheet) }}
{% if portraits.photos %}<table class="photo"><tr><th>photo</th><th>input</th><th>reconstruction</th><th>portrait</th><th>distance</th></tr>
{% for photo in portraits.photos %}<tr><th>{{ photo.name }}</th>
{% for p in photo.pictures %}<td>{% if p.src %}<img src="{{ p.src }}" alt="{{ p.caption }}" class="grid">{% else %}{{ missing(p.missing) }}{% endif %}</td>{% endfor %}
<td class="num">{{ photo.distance }}</td></tr>
{% endfor %}</table>{% endif %}
{% for line in portraits.lines %}{{ missing(line) }}{% endfor %}
{% endif %}
</section>

<section id="edits"><h2>SeFa edits</h2>
{{ picture(edits) }}
</section>

<section id="snapshots"><h2>Snapshots</h2>
{% if snapshots.missing %}{{ missing(snapshots.missing) }}{% else %}
<table><tr><th>step</th><th>kimg</th><th>metrics</th><th>grid</th></tr>
{% for s in snapshots.rows %}<tr{% if s.picked %} class="picked"{% endif %}><td class="num">{{ s.step }}</td>
<td class="num">{{ s.kimg }}</td><td>{{ s.metrics }}{% if s.picked %} <b>picked</b>{% endif %}</td>
<td>{% if s.grid.src %}<img src="{{ s.grid.src }}" alt="{{ s.grid.caption }}" class="grid" style="max-width: 640px; width: 100%">{% else %}{{ missing(s.grid.missing) }}{% endif %}</td></tr>
{% endfor %}</table>
{% if snapshots.why %}<p>Delivered: {{ snapshots.why }}</p>{% endif %}
{% endif %}
</section>

<section id="videos"><h2>Latent walk and portrait morphs</h2>
{% if videos.missing %}{{ missing(videos.missing) }}{% else %}
{% for video in videos.shown %}<figure><video src="{{ video.src }}" controls muted loop playsinline preload="metadata"></video>
<figcaption>{{ video.caption }}</figcaption></figure>
{% endfor %}
{% for line in videos.lines %}{{ missing(line) }}{% endfor %}
{% endif %}
</section>

<section id="metrics"><h2>Metrics</h2>
{% if metrics.missing %}{{ missing(metrics.missing) }}{% else %}
<table><tr><th>metric</th><th>this run</th><th>{{ previous or "no earlier release" }}</th></tr>
{% for name, now, before in metrics.rows %}<tr><th>{{ name }}</th><td class="num">{{ now }}</td><td class="num">{{ before }}</td></tr>
{% endfor %}</table>
{% for line in metrics.lines %}{{ missing(line) }}{% endfor %}
{{ picture(metrics.samples) }}
{% endif %}
</section>

<section id="params"><h2>Params changed since the previous release</h2>
{% if params.missing %}{{ missing(params.missing) }}{% else %}
<table><tr><th>key</th><th>{{ previous }}</th><th>now</th></tr>
{% for key, before, now in params.rows %}<tr><th><code>{{ key }}</code></th><td><code>{{ before }}</code></td><td><code>{{ now }}</code></td></tr>
{% endfor %}</table>
{% endif %}
</section>
</body>
</html>
"""

HISTORY_PAGE = HEAD + """{% from "macros" import missing %}
<body>
<header>
<h1>{{ title }}</h1>
<p>Written {{ written }} from <code>{{ root }}</code>. Each release keeps its night's page:
<code>git checkout TAG &amp;&amp; dvc pull</code> brings back that night's data and page.</p>
{% if last_run %}<p class="release">Last nightly run, {{ last_run.started }}: kept {{ last_run.kept }}. {{ last_run.reason }}</p>{% endif %}
</header>
{% if missing_line %}{{ missing(missing_line) }}{% else %}
<table>
<tr><th>release</th><th>date</th><th>gate</th>{% for name in metric_names %}<th>{{ name }}</th>{% endfor %}<th>pictures</th></tr>
{% for night in nights %}<tr>
<td class="tag">{% if night.page %}<a href="{{ night.page }}">{{ night.tag }}</a>{% else %}{{ night.tag }}<br><span class="missing">no page kept with this release</span>{% endif %}</td>
<td>{{ night.created.strftime("%Y-%m-%d %H:%M") }}</td><td>{{ night.reason }}</td>
{% for name in metric_names %}<td class="num">{{ night.metrics.get(name, "—") }}</td>{% endfor %}
<td class="thumbs">{% for src in night.thumbnails %}<img src="{{ src }}" alt="{{ night.tag }}">{% endfor %}</td>
</tr>
{% endfor %}</table>
{% endif %}
</body>
</html>
"""

templates = Environment(
    loader=DictLoader({"macros": MACROS, "run": RUN_PAGE, "history": HISTORY_PAGE}),
    autoescape=True,
    undefined=StrictUndefined,  # a misspelt field fails the build instead of leaving a gap in the page
    trim_blocks=True,
    lstrip_blocks=True,
)
