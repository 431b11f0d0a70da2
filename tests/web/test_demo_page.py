"""The demo page at `/` in a real browser (headless Chromium from Debian's package, driven by
Playwright) against a real `kdc-trio serve` process: a turn with a file, a follow-up button, and
a stream cut by a TCP proxy that the page resumes from with Last-Event-ID."""

from __future__ import annotations

import hashlib
from contextlib import contextmanager

import httpx
import pytest

from tests.support.browser import artifact, launch, sync_playwright
from tests.support.bundles import SLOW_DELTAS
from tests.support.processes import KdcProcess
from tests.support.tcp_proxy import TCPProxy

FILE = b"the quick brown fox\n" * 50
FILE_SHA = hashlib.sha256(FILE).hexdigest()
TIMEOUT_MS = 15000


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as pw:
        b = launch(pw)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    p = context.new_page()
    p.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    p.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
    p.errors = errors
    yield p
    context.close()


def _server(env: dict[str, str] | None = None) -> KdcProcess:
    return KdcProcess("serve", env or {}).wait_ready()


def _live(page) -> None:
    from playwright.sync_api import expect

    expect(page.locator("#status")).to_have_attribute("data-state", "live")
    expect(page.locator("#session")).to_contain_text("anonymous")


def test_turn_with_a_file_then_a_followup(page, tmp_path):
    from playwright.sync_api import expect

    f = tmp_path / "fox.txt"
    f.write_bytes(FILE)
    proc = _server()
    try:
        page.goto(proc.base_url + "/")
        _live(page)
        page.fill("#text", "hello from chromium")
        page.set_input_files("#files", str(f))
        page.click("#send")
        first = page.locator(".turn").nth(0)
        expect(first.locator(".user")).to_contain_text("fox.txt")
        expect(first.locator(".answer")).to_have_text("You said: hello from chromium")
        expect(first.locator(".thinking .text")).to_have_text(
            "Reading the message. It has 19 characters and 1 attachment(s).")
        expect(page.locator("#timeline")).to_contain_text(f"fox.txt · {len(FILE)} B · sha256 {FILE_SHA}")
        expect(page.locator("#canvas")).to_have_text("# Echo\n\nhello from chromium\n")
        expect(page.locator("#canvas-name")).to_have_text("echo.md · markdown")
        expect(page.locator("#conv-status")).to_have_text("idle · success")
        expect(first.locator(".followup")).to_have_text(["Tell me more", "Send a file", "Start over"])
        page.screenshot(path=str(artifact("demo-page.png")), full_page=True)

        first.locator(".followup", has_text="Tell me more").click()
        second = page.locator(".turn").nth(1)
        expect(second.locator(".user")).to_have_text("Tell me more")
        expect(second.locator(".answer")).to_have_text("You said: Tell me more")
        expect(page.locator("#conv-status")).to_have_text("idle · success")
        page.screenshot(path=str(artifact("demo-page-followup.png")), full_page=True)
        state = page.evaluate("({seen: window.kdcDemo.seen, dups: window.kdcDemo.duplicates})")
        assert state["dups"] == 0 and len(state["seen"]) == len(set(state["seen"]))
        assert page.locator("#notice").is_hidden()  # nothing dropped: no reconnect to report
        assert page.errors == []
    finally:
        proc.stop()


@contextmanager
def _slow_turn_through_a_proxy(page, **env: str):
    """A gateway running SlowBroadcastBundle behind a TCP proxy, the page loaded through it and one
    turn sent: yields (the turn's answer locator, the proxy)."""
    from playwright.sync_api import expect

    proc = _server({"KDC_BUNDLE": "tests.support.bundles:SlowBroadcastBundle", "KDC_SSE_RETRY_MS": "300", **env})
    proxy = TCPProxy(proc.port)
    try:
        page.goto(proxy.url + "/")
        _live(page)
        page.fill("#text", "slow please")
        page.click("#send")
        answer = page.locator(".turn").nth(0).locator(".answer")
        expect(answer).to_contain_text("d1 ")
        yield answer, proxy
    finally:
        proxy.close()
        proc.stop()


def test_stream_cut_mid_turn_resumes_without_loss_or_repeat(page):
    from playwright.sync_api import expect

    with _slow_turn_through_a_proxy(page) as (answer, proxy):
        # the browser's connections end; for 0.6 s (several deltas) it cannot come back
        assert proxy.drop_all(refuse_for_s=0.6) >= 1
        expect(page.locator("#notice")).to_contain_text("Reconnected (#1): resumed after event")
        expect(page.locator("#conv-status")).to_have_text("idle · success")
        text = answer.evaluate("e => e.textContent")
        assert text == "".join(f"d{i} " for i in range(SLOW_DELTAS))
        state = page.evaluate("({seen: window.kdcDemo.seen, dups: window.kdcDemo.duplicates,"
                              " reconnects: window.kdcDemo.reconnects})")
        seen = state["seen"]
        assert seen == list(range(seen[0], seen[0] + len(seen))), "a gap or a repeat in what the page got"
        assert state["dups"] == 0 and state["reconnects"] == 1
        assert proxy.accepted >= 2  # the stream really was opened again
        page.screenshot(path=str(artifact("demo-page-reconnected.png")), full_page=True)


def test_resume_past_the_log_says_events_were_lost(page):
    from playwright.sync_api import expect

    # a log of 3 events, an outage of ~9 deltas: the resume point is no longer held
    with _slow_turn_through_a_proxy(page, KDC_SESSION_LOG_SIZE="3") as (answer, proxy):
        proxy.drop_all(refuse_for_s=0.9)
        expect(page.locator("#notice")).to_contain_text("were lost: the session log no longer held them")
        expect(page.locator("#conv-status")).to_have_text("idle · success")
        text = answer.evaluate("e => e.textContent")
        assert text.startswith("d0 d1 ") and text.endswith("d11 ") and len(text.split()) < SLOW_DELTAS
        page.screenshot(path=str(artifact("demo-page-gap.png")), full_page=True)


def test_gateway_restart_without_the_session_starts_a_new_one(page):
    from playwright.sync_api import expect

    first = _server({"KDC_SSE_RETRY_MS": "300"})
    proxy = TCPProxy(first.port)
    second = None
    try:
        page.goto(proxy.url + "/")
        _live(page)
        old_session = page.locator("#session").get_attribute("data-session-id")
        first.stop()  # an embedded gateway keeps sessions in memory: the new one will not know it
        second = _server({"KDC_SSE_RETRY_MS": "300"})
        proxy.upstream = ("127.0.0.1", second.port)
        proxy.drop_all()
        expect(page.locator("#notice")).to_contain_text("did not know this session any more")
        _live(page)
        assert page.locator("#session").get_attribute("data-session-id") != old_session
        page.fill("#text", "still here?")
        page.press("#text", "Enter")
        expect(page.locator(".turn").nth(0).locator(".answer")).to_have_text("You said: still here?")
    finally:
        proxy.close()
        first.stop()
        if second is not None:
            second.stop()


def test_token_in_the_page_url_signs_in(page):
    from playwright.sync_api import expect

    from kdc_trio.auth.mint import mint_token
    from tests.support.gateway import test_settings

    token = mint_token(test_settings(), subject="alice", roles=(), ttl_s=600)
    proc = _server({"CHAT_SSE_REJECT_ANONYMOUS": "1"})
    try:
        page.goto(f"{proc.base_url}/")  # no token: the page says what to do
        expect(page.locator("#notice")).to_contain_text("authentication_required")
        expect(page.locator("#notice")).to_contain_text("/?token=<access token>")
        expect(page.locator("#status")).to_have_text("sign-in required")
        page.goto(f"{proc.base_url}/?token={token}")
        expect(page.locator("#status")).to_have_attribute("data-state", "live")
        expect(page.locator("#session")).to_contain_text("registered (alice)")
        page.fill("#text", "signed in")
        page.press("#text", "Enter")
        expect(page.locator(".turn").nth(0).locator(".answer")).to_have_text("You said: signed in")
    finally:
        proc.stop()


def test_page_is_off_with_kdc_demo_page_0():
    proc = _server({"KDC_DEMO_PAGE": "0"})
    try:
        for path in ("/", "/demo/app.js"):
            r = httpx.get(proc.base_url + path)
            assert r.status_code == 404 and r.json()["error"] == "not_found"
    finally:
        proc.stop()


def test_page_files_are_served_with_their_types_and_a_strict_csp():
    proc = _server()
    try:
        for path, ctype in (("/", "text/html"), ("/demo/app.js", "text/javascript"), ("/demo/style.css", "text/css")):
            r = httpx.get(proc.base_url + path)
            assert r.status_code == 200 and r.headers["content-type"].startswith(ctype)
            assert "script-src 'self'" in r.headers["content-security-policy"]
        html = httpx.get(proc.base_url + "/").text
        assert "http://" not in html and "https://" not in html  # nothing from anywhere else
    finally:
        proc.stop()
