"""`python3 -m kdc_trio.dist`: build one self-contained executable of the server (PyInstaller one-file).

The result, `dist/kdc-trio`, runs `serve`, `worker`, `token`, `chat` and `settings` on a machine with
no Python environment: the interpreter, kdc-trio, its C extensions (hiredis, cryptography) and the
demo page are inside. A bundle can still be given at run time: `KDC_BUNDLE=path/to/file.py:Class`.

Why PyInstaller and not a zipapp: a zipapp cannot import C extensions from inside the archive
(hiredis, cryptography's Rust core, orjson), and it still needs a Python on the target machine.
PyInstaller's one-file mode unpacks to a private temp dir at start (the start-up cost is stated in
the README) and needs nothing installed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENTRY = "import sys\nfrom kdc_trio.cli import main\nsys.exit(main())\n"
# Packages imported lazily or through importlib (bundles by name, the compat backend is left out:
# it needs redis-py under trio-asyncio, which a single-file server does not carry).
COLLECT = ("kdc_trio", "protocol")
HIDDEN = ("hiredis", "multipart", "jwt", "cryptography", "h11", "wsproto", "orjson", "prometheus_client",
          "httpx", "httpx_sse")
EXCLUDE = ("kdc_trio.redis.compat", "trio_asyncio", "matplotlib", "tkinter", "pytest", "IPython", "numpy")


def build(out_dir: Path, *, name: str = "kdc-trio", quiet: bool = True) -> Path:
    """Build the executable into `out_dir` and return its path."""
    try:
        import PyInstaller.__main__  # noqa: F401
    except ImportError:
        raise SystemExit("PyInstaller is not installed: pip install -e '.[dist]'") from None
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kdc-dist-") as work:
        entry = Path(work) / "kdc_trio_entry.py"
        entry.write_text(ENTRY)
        cmd = [sys.executable, "-m", "PyInstaller", "--onefile", "--noconfirm", "--clean", "--name", name,
               "--distpath", str(out_dir), "--workpath", str(Path(work) / "build"), "--specpath", work,
               "--paths", str(ROOT)]
        if quiet:
            cmd += ["--log-level", "WARN"]
        for pkg in COLLECT:
            cmd += ["--collect-submodules", pkg, "--collect-data", pkg]
        for mod in HIDDEN:
            cmd += ["--hidden-import", mod]
        for mod in EXCLUDE:
            cmd += ["--exclude-module", mod]
        subprocess.run([*cmd, str(entry)], check=True, cwd=work)
    return out_dir / name


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m kdc_trio.dist", description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "dist"), help="directory for the executable (default: dist/)")
    p.add_argument("--name", default="kdc-trio")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    t0 = time.monotonic()
    exe = build(Path(args.out), name=args.name, quiet=not args.verbose)
    size = os.path.getsize(exe)
    print(f"built {exe} ({size / 1e6:.1f} MB) in {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
