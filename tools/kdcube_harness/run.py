#!/usr/bin/env python3
"""KDCube's own web client against `kdc-trio serve`: bundle it, run it in Node, print a result table.

    python3 tools/kdcube_harness/run.py --kdcube-src <KDCube git dir, checkout, or dir with app/ai-app/ui>

1. copies KDCube's client sources (`app/ai-app/ui`) into a temporary directory (`git archive HEAD` for a
   git directory or checkout; nothing of KDCube's is ever written inside this repository);
2. `npm ci` here when node_modules is missing, then `node build.mjs` bundles the chat web app's store
   and middleware and the mini app's SseChatService with esbuild (two small patches, printed);
3. starts `python3 -m kdc_trio serve` (embedded, the demo bundle) on a free port with a fresh JWT secret,
   and mints a token with `python3 -m kdc_trio token`;
4. runs each scenario in its own Node process (browser stand-ins only: browser.mjs) and prints one row
   per step. Exit status 0 only when every step of every scenario passed.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
UI = "app/ai-app/ui"

# name, script, arguments
SCENARIOS: list[tuple[str, str, dict[str, str]]] = [
    ("sse-anonymous", "app_scenario.mjs", {"transport": "sse", "auth": "anonymous"}),
    ("sse-cookie-token", "app_scenario.mjs", {"transport": "sse", "auth": "cookie"}),
    ("sse-bearer-token", "app_scenario.mjs", {"transport": "sse", "auth": "bearer"}),
    ("socketio-token", "app_scenario.mjs", {"transport": "websocket", "auth": "bearer"}),
    ("sse-proto-anonymous", "proto_scenario.mjs", {}),
    ("sse-proto-bearer-token", "proto_scenario.mjs", {"auth": "bearer"}),
]


def is_git_dir(path: Path) -> bool:
    return (path / "HEAD").is_file() and (path / "objects").is_dir()


def extract(src: Path, dest: Path) -> str:
    """Copies KDCube's `app/ai-app/ui` from `src` into `dest`; returns a description of the version."""
    git_dir = src if is_git_dir(src) else src / ".git" if (src / ".git").exists() else None
    if git_dir is not None:
        archive = subprocess.run(["git", f"--git-dir={git_dir}", "archive", "HEAD", UI], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
        commit = subprocess.run(["git", f"--git-dir={git_dir}", "log", "-1", "--format=%H %cI"], check=True,
                                capture_output=True, text=True).stdout.strip()
        return f"git {commit}"
    if not (src / UI).is_dir():
        raise SystemExit(f"{src}: neither a git directory nor a directory holding {UI}")
    shutil.copytree(src / UI, dest / UI, ignore=shutil.ignore_patterns("node_modules", "dist"))
    return f"directory {src}"


def ensure_node_modules() -> None:
    if not (HERE / "node_modules" / "esbuild").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=HERE, check=True)


class Server:
    """`python3 -m kdc_trio serve` on a free port (KDC_PORT=0, --port-file), logging to a file."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.port_file = workdir / "port"
        self.log_path = workdir / "server.log"
        self.env = env
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "kdc_trio", "serve", "--port-file", str(self.port_file)],
                                     cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_port(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"kdc-trio serve exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
            if self.port_file.exists() and self.port_file.read_text().strip():
                return int(self.port_file.read_text())
            time.sleep(0.05)
        raise SystemExit(f"kdc-trio serve not listening after {timeout}s:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()


def mint_token(env: dict[str, str]) -> str:
    out = subprocess.run([sys.executable, "-m", "kdc_trio", "token", "--sub", "kdcube-harness",
                          "--username", "KDCube Harness"], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    return out.stdout.strip()


def run_scenario(name: str, script: str, bundle: str, base: str, token: str, extra: dict[str, str],
                 timeout_s: float, verbose: bool) -> dict:
    argv = ["node", str(HERE / script), "--bundle", bundle, "--base", base]
    for key, value in extra.items():
        argv += [f"--{key}", value]
    if extra.get("auth", "anonymous") != "anonymous":
        argv += ["--token", token]
    if verbose:
        argv += ["--verbose", "1"]
    try:
        out = subprocess.run(argv, cwd=HERE, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        return {"steps": [{"step": "scenario", "ok": False, "problems": [f"timed out after {timeout_s}s"], "notes": []}],
                "stderr": (exc.stderr or b"")[-2000:].decode(errors="replace") if isinstance(exc.stderr, bytes) else str(exc.stderr)}
    last = out.stdout.strip().splitlines()[-1:] if out.stdout.strip() else []
    try:
        result = json.loads(last[0])
    except (IndexError, ValueError):
        return {"steps": [{"step": "scenario", "ok": False, "notes": [],
                           "problems": [f"node exited {out.returncode} without a result: {out.stderr[-1500:]}"]}]}
    if verbose:
        result["stderr"] = out.stderr[-4000:]
    return result


def print_table(results: dict[str, dict]) -> None:
    rows = [("scenario", "step", "result", "detail")]
    for name, result in results.items():
        for step in result["steps"]:
            detail = "; ".join(step.get("problems") or step.get("notes") or [])
            rows.append((name, step["step"], "PASS" if step["ok"] else "FAIL", detail[:160]))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print("  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kdcube-src", default=os.environ.get("KDCUBE_SRC"),
                   help="KDCube's git directory, a checkout, or a directory holding app/ai-app/ui (env KDCUBE_SRC)")
    p.add_argument("--scenario", action="append", help="run only these scenarios (repeatable)")
    p.add_argument("--json", help="also write the full results (steps, notes, requests) to this file")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="extra server setting")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per scenario")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (sources, bundle, server log)")
    p.add_argument("--verbose", action="store_true", help="let the client's console through (in the JSON's stderr)")
    args = p.parse_args(argv)
    if not args.kdcube_src:
        p.error("--kdcube-src (or KDCUBE_SRC) is required")
    for tool in ("node", "npm", "git", "tar"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is needed on the PATH")
    work = Path(tempfile.mkdtemp(prefix="kdcube-harness-"))
    server = None
    try:
        version = extract(Path(args.kdcube_src).resolve(), work)
        ensure_node_modules()
        built = subprocess.run(["node", str(HERE / "build.mjs"), "--src", str(work), "--out", str(work / "bundle")],
                               cwd=HERE, capture_output=True, text=True)
        if built.returncode != 0:
            raise SystemExit(f"esbuild bundling failed:\n{built.stderr}")
        manifest = json.loads(built.stdout)
        print(f"KDCube client: {version} ({manifest['kdcube_files']} source files bundled)")
        for patch in manifest["patches"]:
            print(f"  patched {patch['file']}: {patch['from']!r} -> {patch['to']!r}\n    ({patch['why']})")
        env = {**os.environ, "KDC_PORT": "0", "KDC_HOST": "127.0.0.1", "KDC_JWT_SECRET": secrets.token_urlsafe(32),
               "KDC_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)}
        env.update(item.split("=", 1) for item in args.env)
        server = Server(work, env)
        base = f"http://127.0.0.1:{server.wait_port()}"
        token = mint_token(env)
        print(f"kdc-trio serve at {base}\n")
        results: dict[str, dict] = {}
        for name, script, extra in SCENARIOS:
            if args.scenario and name not in args.scenario:
                continue
            bundle = manifest["outputs"]["app" if script == "app_scenario.mjs" else "sse-proto"]
            results[name] = run_scenario(name, script, bundle, base, token, extra, args.timeout, args.verbose)
        print_table(results)
        if args.json:
            Path(args.json).write_text(json.dumps({"kdcube": version, "patches": manifest["patches"],
                                                   "results": results}, indent=2))
        failed = [n for n, r in results.items() if not all(s["ok"] for s in r["steps"])]
        print(f"\n{len(results) - len(failed)}/{len(results)} scenarios passed" + (f"; failed: {', '.join(failed)}" if failed else ""))
        return 1 if failed or not results else 0
    finally:
        if server is not None:
            server.stop()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
