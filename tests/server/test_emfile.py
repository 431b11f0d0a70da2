"""Out of file descriptors on accept (a real EMFILE) is survived: a server process with a low
RLIMIT_NOFILE is flooded with connections past its limit, logs the accept errors, keeps
serving the connections it holds, and accepts again as soon as descriptors are free."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import trio

from tests.server.raw import connect, exchange, get, read_response, send
from tests.support.processes import ROOT

FD_LIMIT = 48
SERVER = textwrap.dedent(f"""
    import resource, trio
    from kdc_trio.server import Router, Server
    from tests.support.gateway import test_settings


    async def hello(req, ex):
        await ex.json(200, {{"ok": True}})

    async def main():
        router = Router()
        router.add("GET", "/hello", hello)
        server = Server(test_settings(read_timeout_s=30, keepalive_timeout_s=30), router)
        # Lowered after the server derived its connection cap from the real limit, so the cap
        # (which would close connections before descriptors run out) is not what the flood meets.
        resource.setrlimit(resource.RLIMIT_NOFILE, ({FD_LIMIT}, {FD_LIMIT}))
        async with trio.open_nursery() as nursery:
            ports = await nursery.start(server.serve)
            print(ports[0], flush=True)
            while True:
                await trio.sleep(0.05)
                print("accept_errors", server.accept_errors, flush=True)

    trio.run(main)
""")


class Lines:
    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream, self.buffer = stream, b""

    async def next(self) -> str:
        while b"\n" not in self.buffer:
            data = await self.stream.receive_some(4096)
            if not data:
                raise EOFError("the server process exited")
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()


async def test_emfile_on_accept_is_survived(tmp_path):
    err_path = tmp_path / "server.err"
    with open(err_path, "wb") as err:
        proc = await trio.lowlevel.open_process([sys.executable, "-c", SERVER], cwd=ROOT,
                                                stdout=subprocess.PIPE, stderr=err)
    try:
        lines = Lines(proc.stdout)
        with trio.fail_after(15):
            port = int(await lines.next())
            first = await connect(port)  # a connection held from before the flood
            held = [await connect(port) for _ in range(2 * FD_LIMIT)]  # far past what the server may hold
            while True:
                line = await lines.next()
                if line.startswith("accept_errors") and int(line.split()[1]) > 0:
                    break
            errors_while_full = int(line.split()[1])
            await send(first, get("/hello"))
            during = await read_response(first)  # connections it holds are still served
            for s in held:
                await s.aclose()
            while True:  # the backlog drains as descriptors free up
                try:
                    after = await exchange(port, get("/hello"), timeout=2)
                    break
                except (OSError, trio.BrokenResourceError, trio.TooSlowError):
                    await trio.sleep(0.1)
            await first.aclose()
        assert proc.poll() is None, "the server process is still running"
    finally:
        proc.kill()
        with trio.fail_after(10):
            await proc.wait()
        await proc.stdout.aclose()
    assert errors_while_full > 0
    assert during.status == 200 and after.status == 200 and after.json() == {"ok": True}
    assert "accept failed (EMFILE)" in err_path.read_text()
