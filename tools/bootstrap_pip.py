"""Install pip into the running interpreter's venv from PyPI, for Pythons without ensurepip.

Debian and Ubuntu ship `venv` without `ensurepip` unless python3-venv is installed; `./dev` then
makes the venv with `--without-pip` and runs this with the venv's Python. Standard library only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request

INDEX = os.environ.get("KDC_PYPI_JSON", "https://pypi.org/pypi/pip/json")


def main() -> int:
    with urllib.request.urlopen(INDEX, timeout=60) as r:
        release = json.load(r)
    wheel = next(f for f in release["urls"] if f["packagetype"] == "bdist_wheel")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, wheel["filename"])
        with urllib.request.urlopen(urllib.parse.urljoin(INDEX, wheel["url"]), timeout=120) as r, open(path, "wb") as out:
            out.write(r.read())
        # A wheel is a zip of pure Python: pip can run from it to install itself.
        return subprocess.call([sys.executable, os.path.join(path, "pip"), "install", "--quiet", path])


if __name__ == "__main__":
    sys.exit(main())
