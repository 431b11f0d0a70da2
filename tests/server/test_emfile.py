"""Out of file descriptors on accept (EMFILE) is survived: a server process with a low
RLIMIT_NOFILE is flooded with connections past its limit, logs the accept errors, and answers
again as soon as descriptors are free."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import trio

from tests.server.raw import exchange
from tests.support.processes import ROOT

SERVER = textwrap.dedent("""
    import resource, sys, trio
    from kdc_trio.server import Router, Server
    from tests.support.gateway import test_settings

    resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))

    async def hello(req, ex):
        await ex.json(200, {"ok": True})

    async def main():
        router = Router()
        router.add("GET", "/hello", hello)
        server = Server(test_settings(read_timeout_s=30, keepalive_timeout_s=30), router)
        async with trio.open_nursery() as nursery:
            ports = await nursery.start(server.serve)
            print(ports[0], flush=True)
            while True:
                await trio.sleep(0.2)
                print("accept_errors", server.accept_errors, flush=True)

    trio.run(main)
""")


async def test_emfile_on_accept_is_survived():
    proc = subprocess.Popen([sys.executable, "-c", SERVER], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        held = []
        for _ in range(80):  # far past the 48 descriptors the server may hold
            held.append(await trio.open_tcp_stream("127.0.0.1", port))
        with trio.fail_after(10):
            while True:
                line = await trio.to_thread.run_sync(proc.stdout.readline)
                if line.startswith("accept_errors") and int(line.split()[1]) > 0:
                    break
        assert proc.poll() is None, "the server is still running"
        for s in held:
            await s.aclose()
        with trio.fail_after(10):
            while True:
                try:
                    r = await exchange(port, b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n", timeout=2)
                    break
                except (OSError, trio.BrokenResourceError, trio.TooSlowError):
                    await trio.sleep(0.1)
        assert r.status == 200 and r.json() == {"ok": True}
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=10)
    assert "EMFILE" in err
