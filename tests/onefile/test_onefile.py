"""`python3 -m kdc_trio.dist` builds one executable that serves, runs workers and mints tokens with no
Python environment: it is built once here, then run with a scrubbed environment (no PYTHONPATH, no
venv on the PATH) from an empty directory.

- `serve`: /health, and one SSE turn answered by the demo bundle inside the binary;
- `serve` with `KDC_BUNDLE=<path>.py:Class`: the user's own bundle, loaded from a file at run time;
- `worker` against a real Redis, `token`, `settings`.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import trio

from kdc_trio.dist import build
from tests.support.gateway import TEST_SECRET
from tests.support.redis_server import redis_server
from tests.support.sse_client import open_stream

# Building takes ~40 s on an idle 2-core box (PyInstaller's analysis), minutes on a busy one.
pytestmark = pytest.mark.timeout(900)

USER_BUNDLE = '''
from kdc_trio.sdk import ChatCommunicator


class EchoBundle:
    async def run(self, turn, comm: ChatCommunicator) -> None:
        await comm.start()
        await comm.delta(text="echo: " + turn.message.text, index=0, marker="answer")
        await comm.complete()
'''


@pytest.fixture(scope="module")
def exe(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("dist"))


def _clean_env(**extra: str) -> dict[str, str]:
    """No Python environment: only the system PATH and our settings."""
    return {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"), "KDC_HOST": "127.0.0.1",
            "KDC_PORT": "0", "KDC_JWT_SECRET": TEST_SECRET, "KDC_SHUTDOWN_GRACE_S": "1", **extra}


class Served:
    def __init__(self, exe: Path, cwd: Path, env: dict[str, str]) -> None:
        self.port_file = cwd / "port"
        self.log = open(cwd / "log", "w")
        self.started = time.monotonic()
        self.proc = subprocess.Popen([str(exe), "serve", "--port-file", str(self.port_file)], cwd=cwd, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while not (self.port_file.exists() and self.port_file.read_text()):
            assert self.proc.poll() is None, (self.log.flush(), self.port_file.with_name("log").read_text())
            assert time.monotonic() < deadline, "the executable did not start listening"
            time.sleep(0.05)
        self.start_s = time.monotonic() - self.started
        return f"http://127.0.0.1:{self.port_file.read_text()}"

    def stop(self) -> int:
        self.proc.terminate()
        rc = self.proc.wait(timeout=20)
        self.log.close()
        return rc


async def _one_turn(base_url: str, text: str):
    async with httpx.AsyncClient(base_url=base_url, timeout=20) as client, trio.open_nursery() as nursery:
        assert (await client.get("/health")).json()["status"] == "ok"
        st = await open_stream(nursery, client, "/sse/stream?stream_id=s")
        sid = st.ready["session_id"]
        r = await client.post(f"/sse/chat?stream_id=s&user_session_id={sid}", json={"message": text})
        assert r.status_code == 202, r.text
        await st.wait_event("chat_complete", timeout=30)
        nursery.cancel_scope.cancel()
    return "".join(e.data["delta"]["text"] for e in st.of("chat_delta") if e.data["delta"]["marker"] == "answer")


async def test_the_executable_serves_the_demo_bundle(exe, tmp_path):
    srv = Served(exe, tmp_path, _clean_env())
    try:
        answer = await _one_turn(srv.wait_ready(), "hello from a single file")
    finally:
        assert srv.stop() == 0
    assert answer, "the demo bundle answered"
    print(f"one-file: {exe.stat().st_size / 1e6:.1f} MB, listening {srv.start_s:.2f} s after exec")


async def test_the_executable_runs_a_bundle_given_as_a_file_at_run_time(exe, tmp_path):
    (tmp_path / "my_bundle.py").write_text(USER_BUNDLE)
    srv = Served(exe, tmp_path, _clean_env(KDC_BUNDLE=f"{tmp_path / 'my_bundle.py'}:EchoBundle"))
    try:
        answer = await _one_turn(srv.wait_ready(), "ping")
    finally:
        srv.stop()
    assert answer == "echo: ping"


def test_the_executable_mints_tokens_prints_settings_and_runs_a_worker(exe, tmp_path):
    token = subprocess.run([str(exe), "token", "--sub", "alice"], env=_clean_env(), cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)
    assert token.returncode == 0 and token.stdout.count(".") == 2, token.stderr
    settings = subprocess.run([str(exe), "settings"], env=_clean_env(), cwd=tmp_path, capture_output=True,
                              text=True, timeout=60)
    assert "| `REDIS_URL` |" in settings.stdout
    with redis_server() as redis:
        log = open(tmp_path / "worker.log", "w")
        proc = subprocess.Popen([str(exe), "worker"], env=_clean_env(REDIS_URL=redis.url), cwd=tmp_path,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while "ready" not in (tmp_path / "worker.log").read_text():
                assert proc.poll() is None, (tmp_path / "worker.log").read_text()
                assert time.monotonic() < deadline
                time.sleep(0.1)
        finally:
            proc.terminate()
            proc.wait(timeout=20)
            log.close()
