"""`kdc-trio chat` as a user runs it (a real process against a real server): output and exit codes."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys

import pytest

from tests.support.processes import ROOT, KdcProcess


def chat(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kdc_trio", "chat", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.fixture(scope="module")
def demo_server():
    proc = KdcProcess("serve", {}).wait_ready()
    yield proc
    proc.stop()


def test_prints_steps_thinking_and_answer(demo_server, tmp_path):
    f = tmp_path / "report.txt"
    f.write_bytes(b"quarterly numbers\n")
    r = chat(demo_server.base_url, "how are the numbers?", "--file", str(f))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert f"report.txt 18 B sha256 {hashlib.sha256(b'quarterly numbers' + bytes([10])).hexdigest()}" in out
    assert "Reading the message. It has 20 characters and 1 attachment(s)." in out
    assert "\nYou said: how are the numbers?\n" in out
    assert "· follow-ups: Tell me more | Send a file | Start over" in out
    assert "\x1b[" not in out  # not a terminal: no colour codes
    # steps as they happen: the attachments step before the thinking, the thinking before the answer
    assert out.index("Attachments received") < out.index("Reading the message") < out.index("You said")


def chat_with_server(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """`kdc-trio chat <url of a server started with env> *args`."""
    proc = KdcProcess("serve", env).wait_ready()
    try:
        return chat(proc.base_url, *args)
    finally:
        proc.stop()


def test_chat_error_exits_1():
    r = chat_with_server({"KDC_BUNDLE": "tests.support.bundles:FailingBundle"}, "break please")
    assert r.returncode == 1
    assert "partial " in r.stdout and "error: the bundle failed: RuntimeError" in r.stdout


def test_refused_exits_2():
    r = chat_with_server({"CHAT_SSE_REJECT_ANONYMOUS": "1"}, "no token")
    assert r.returncode == 2
    assert "refused: 401 authentication_required" in r.stderr


def test_token_flag_is_used(demo_server):
    r = chat(demo_server.base_url, "hi", "--token", "not-a-jwt")
    assert r.returncode == 2 and "401" in r.stderr


def test_unreachable_exits_3():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: refused
        r = chat(f"http://127.0.0.1:{port}", "anyone?")
    assert r.returncode == 3
    assert "cannot reach" in r.stderr


def test_missing_file_exits_2(demo_server, tmp_path):
    r = chat(demo_server.base_url, "x", "--file", str(tmp_path / "nope.txt"))
    assert r.returncode == 2 and "nope.txt" in r.stderr


def test_thinking_is_dimmed_on_a_terminal(demo_server):
    import pty

    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "kdc_trio", "chat", demo_server.base_url, "tty please"],
                            cwd=ROOT, stdout=follower, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=30) == 0
    os.close(leader)
    out = b"".join(chunks).decode()
    assert "\x1b[2mReading the message. \x1b[0m" in out
    assert "You said: tty please" in out
