"""`kdc_trio.running(...)`: a gateway hosted inside a Trio program; bundles loaded from a path."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import httpx
import pytest
import trio

import kdc_trio
from kdc_trio.client import Client
from kdc_trio.embed import url_for
from kdc_trio.processor.bundle import BundleLoadError, load_bundle
from tests.support.gateway import test_settings
from tests.support.processes import ROOT, KdcProcess
from tests.support.sse_client import open_stream


class ShoutBundle:
    async def run(self, turn, comm):
        await comm.start(message=turn.message.text)
        await comm.delta(turn.message.text.upper(), index=0, marker="answer")
        await comm.complete(data={})


async def test_running_serves_the_given_bundle_then_stops():
    async with kdc_trio.running(test_settings(), bundle=ShoutBundle()) as gw:
        assert gw.port > 0 and gw.url == f"http://127.0.0.1:{gw.port}"
        async with Client(gw.url) as client:
            assert (await client.ask("quiet please")).text == "QUIET PLEASE"
        url = gw.url
    with pytest.raises(httpx.ConnectError):  # stopped: nothing listens any more
        async with httpx.AsyncClient() as http:
            await http.get(f"{url}/health")


async def test_leaving_the_block_drains_open_streams():
    async with httpx.AsyncClient(timeout=10) as http:
        async with trio.open_nursery() as nursery:
            async with kdc_trio.running(test_settings(shutdown_grace_s=5.0), bundle=ShoutBundle()) as gw:
                st = await open_stream(nursery, http, f"{gw.url}/sse/stream?stream_id=s1")
            # the block's end waited for the drain: the stream was told, and ended
            await st.wait_event("server_shutdown", timeout=5)
            assert st.of("server_shutdown")[0].data["reason"] == "draining"


async def test_an_error_in_the_block_stops_the_gateway_at_once():
    with pytest.raises(ZeroDivisionError):
        with trio.fail_after(5):
            async with kdc_trio.running(test_settings(shutdown_grace_s=30.0), bundle=ShoutBundle()) as gw:
                url = gw.url
                1 / 0
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as http:
            await http.get(f"{url}/health")


async def test_running_can_be_cancelled_from_outside():
    with trio.move_on_after(0.5) as scope:
        async with kdc_trio.running(test_settings(), bundle=ShoutBundle()):
            await trio.sleep_forever()
    assert scope.cancelled_caught


def test_url_for():
    assert url_for("0.0.0.0", 80) == "http://127.0.0.1:80"
    assert url_for("::", 80) == "http://[::1]:80"
    assert url_for("::1", 9) == "http://[::1]:9"
    assert url_for("gw.internal", 9) == "http://gw.internal:9"


# ---- KDC_BUNDLE=path/to/file.py:Class ----------------------------------------------------------
BUNDLE_FILE = '''
from dataclasses import dataclass


@dataclass
class Config:
    prefix: str = "from a file: "


class FileBundle:
    config = Config()

    async def run(self, turn, comm):
        await comm.start(message=turn.message.text)
        await comm.delta(self.config.prefix + turn.message.text[::-1], index=0, marker="answer")
        await comm.complete(data={})
'''


def test_load_bundle_from_a_file(tmp_path):
    path = tmp_path / "my_bundle.py"
    path.write_text(BUNDLE_FILE)
    bundle = load_bundle(f"{path}:FileBundle")
    assert type(bundle).__name__ == "FileBundle"
    assert load_bundle(f"{path}:FileBundle").__class__ is type(bundle)  # loaded once, then reused
    assert type(load_bundle("tests.support.bundles:FailingBundle")).__name__ == "FailingBundle"


@pytest.mark.parametrize("spec, message", [
    ("no_colon", "expected 'module:attribute'"),
    ("{dir}/missing.py:X", "no such file"),
    ("{dir}/ok.py:Nope", "has no attribute 'Nope'"),
    ("{dir}/ok.py:NotABundle", "has no run(turn, communicator)"),
    ("{dir}/broken.py:X", "failed to import: SyntaxError"),
    ("no_such_module_xyz:X", "cannot import 'no_such_module_xyz'"),
])
def test_bad_bundle_specs_say_why(tmp_path, spec, message):
    (tmp_path / "ok.py").write_text("class NotABundle:\n    pass\n")
    (tmp_path / "broken.py").write_text("def (:\n")
    with pytest.raises(BundleLoadError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_bundle(spec.format(dir=tmp_path))


async def test_serve_runs_a_bundle_file_given_at_run_time(tmp_path):
    path = tmp_path / "user_code" / "my_bundle.py"
    path.parent.mkdir()
    path.write_text(BUNDLE_FILE)
    proc = KdcProcess("serve", {"KDC_BUNDLE": f"{path}:FileBundle"}).wait_ready()
    try:
        async with Client(proc.base_url) as client:
            assert (await client.ask("abc")).text == "from a file: cba"
    finally:
        proc.stop()


def test_serve_with_a_bad_bundle_exits_2_naming_it(tmp_path):
    r = subprocess.run([sys.executable, "-m", "kdc_trio", "serve"], cwd=ROOT, capture_output=True, text=True,
                       timeout=30, env={**os.environ, "PYTHONPATH": str(ROOT), "KDC_PORT": "0",
                                        "KDC_BUNDLE": f"{tmp_path}/absent.py:Bundle"})
    assert r.returncode == 2
    assert textwrap.dedent(f"KDC_BUNDLE={tmp_path}/absent.py:Bundle: no such file") in r.stderr
