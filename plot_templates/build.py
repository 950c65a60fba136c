"""Writes offline.html, the page `dvc plots show` fills (.dvc/config: plots.html_template): DVC's
own page with vega, vega-lite and vega-embed inlined instead of loaded from a CDN, so the charts
draw with no network and the page works on its own wherever it is copied.

Run it where npm reaches the registry, after a DVC upgrade (tests/test_plots.py fails when the
installed dvc-render asks for other versions than the page carries):

    python plot_templates/build.py

It packs the versions the installed dvc-render's VegaRenderer loads from cdn.jsdelivr.net, and
inlines the file that CDN serves for each (the package.json `jsdelivr` entry) as it is, less its
source-map comment (the map is not shipped). Each package's BSD-3-Clause licence goes with it.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import tarfile
import tempfile
from pathlib import Path

from dvc_render.html import PAGE_HTML
from dvc_render.vega import VegaRenderer

HERE = Path(__file__).resolve().parent
PAGE = HERE / "offline.html"
SOURCE_MAP = re.compile(r"\n//# sourceMappingURL=\S+\s*$")


def cdn_packages() -> list[str]:
    """name@version of each script VegaRenderer puts on its page, in its order."""
    return re.findall(r'src="https://cdn\.jsdelivr\.net/npm/([^"]+)"', VegaRenderer.SCRIPTS)


def inline(package: str, folder: Path) -> str:
    """A <script> of package's CDN file, preceded by a comment with its provenance and licence."""
    listing = subprocess.run(["npm", "pack", "--json", package], cwd=folder, capture_output=True, text=True,
                             check=True).stdout
    with tarfile.open(folder / json.loads(listing)[0]["filename"]) as tar:
        manifest = json.load(tar.extractfile("package/package.json"))
        code = tar.extractfile(f"package/{manifest['jsdelivr']}").read()
        licence = tar.extractfile("package/LICENSE").read().decode().strip()
    script = SOURCE_MAP.sub("", code.decode())
    # inline <script> text ends at the first "</script" ("<!--" changes how it is parsed), a comment at "--"
    assert not re.search(r"</script|<!--", script, re.IGNORECASE) and "--" not in licence, package
    # DVC fills the page with str.replace of these: they must occur nowhere else
    assert not any(f"{{{name}}}" in script for name in ("scripts", "plot_divs", "refresh_tag")), package
    return (f"<!-- {package}: package/{manifest['jsdelivr']} of the npm package (sha256 "
            f"{hashlib.sha256(code).hexdigest()}), licence {manifest['license']}:\n{licence}\n-->\n"
            f'<script data-package="{package}">\n{script}\n</script>')


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        scripts = "\n".join(inline(package, Path(folder)) for package in cdn_packages())
    # DVC's page as it is, but for the CDN scripts ({scripts}: left out, so DVC's are never added)
    PAGE.write_text(PAGE_HTML.replace("<head>", '<head>\n    <meta charset="utf-8">', 1)
                    .replace("{scripts}", scripts, 1), encoding="utf8")
    print(f"{PAGE}: {', '.join(cdn_packages())}")


if __name__ == "__main__":
    main()
