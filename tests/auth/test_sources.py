"""Token sources and precedence (ARCHITECTURE.md, Auth): header/Socket.IO > query > cookie."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdc_trio.auth.errors import AuthError
from kdc_trio.auth.sources import (
    TokenSource, Tokens, bearer_from_authorization, extract_tokens, headers_from_pairs,
    parse_cookie_header,
)
from tests.auth.helpers import settings

S = settings()
H, SIO, Q, C = TokenSource.HEADER, TokenSource.SOCKETIO, TokenSource.QUERY, TokenSource.COOKIE


def _sources(which: str, kind: str) -> dict:
    """Build the request parts carrying a token named `<source>-<kind>` for each source in `which`."""
    headers: dict[str, str] = {}
    cookies: dict[str, str] = {}
    query: dict[str, str] = {}
    sio: dict[str, str] = {}
    for src in which:
        tok = f"{src}-{kind}"
        if src == "h":
            if kind == "access":
                headers["authorization"] = f"Bearer {tok}"
            else:
                headers[S.id_token_header.lower()] = tok
        elif src == "s":
            sio["bearer_token" if kind == "access" else "id_token"] = tok
        elif src == "q":
            query["bearer_token" if kind == "access" else "id_token"] = tok
        elif src == "c":
            cookies[S.auth_token_cookie if kind == "access" else S.id_token_cookie] = tok
    return {"headers": headers, "cookies": cookies, "query": query, "sio_auth": sio}


# (sources present, expected winner) — every combination of the four sources.
PRECEDENCE = [
    ("h", "h"), ("s", "s"), ("q", "q"), ("c", "c"),
    ("hq", "h"), ("hc", "h"), ("hqc", "h"), ("hs", "h"), ("hsqc", "h"),
    ("sq", "s"), ("sc", "s"), ("sqc", "s"),
    ("qc", "q"),
    ("", None),
]
WINNER = {"h": H, "s": SIO, "q": Q, "c": C}


@pytest.mark.parametrize("kind", ["access", "id"])
@pytest.mark.parametrize("present,winner", PRECEDENCE)
def test_precedence_table(kind: str, present: str, winner: str | None) -> None:
    tokens = extract_tokens(S, **_sources(present, kind))
    value, source = (tokens.access, tokens.access_source) if kind == "access" else (tokens.id, tokens.id_source)
    other = tokens.id if kind == "access" else tokens.access
    assert other is None
    if winner is None:
        assert tokens.empty and value is None and source is None
    else:
        assert value == f"{winner}-{kind}"
        assert source is WINNER[winner]


def test_access_and_id_tokens_are_chosen_independently() -> None:
    parts = _sources("q", "access")
    parts["cookies"] = {S.id_token_cookie: "cookie-id", S.auth_token_cookie: "cookie-access"}
    parts["headers"] = {S.id_token_header.lower(): "header-id"}
    t = extract_tokens(S, **parts)
    assert (t.access, t.access_source, t.id, t.id_source) == ("q-access", Q, "header-id", H)


def test_cookies_parsed_from_header_when_not_given() -> None:
    headers = {"cookie": f"a=b; {S.auth_token_cookie}=from-cookie; {S.id_token_cookie}=\"quoted-id\""}
    t = extract_tokens(S, headers=headers)
    assert (t.access, t.access_source, t.id, t.id_source) == ("from-cookie", C, "quoted-id", C)


def test_configurable_names() -> None:
    s = settings(auth_token_cookie="AT", id_token_cookie="IT", id_token_header="X-My-Id")
    t = extract_tokens(s, headers={"x-my-id": "hid"}, cookies={"AT": "cat", S.auth_token_cookie: "ignored"})
    assert (t.access, t.id) == ("cat", "hid")
    t = extract_tokens(s, cookies={"IT": "cid"})
    assert (t.access, t.id, t.id_source) == (None, "cid", C)


@pytest.mark.parametrize("empty", [None, "", "   "])
def test_empty_values_fall_through(empty) -> None:
    t = extract_tokens(S, sio_auth={"bearer_token": empty, "id_token": empty},
                       query={"bearer_token": "q"}, cookies={S.id_token_cookie: "c"})
    assert (t.access, t.access_source, t.id, t.id_source) == ("q", Q, "c", C)


@pytest.mark.parametrize("bad", [123, ["x"], {"a": 1}, True])
def test_non_string_socketio_token_is_malformed_not_anonymous(bad) -> None:
    with pytest.raises(AuthError) as ei:
        extract_tokens(S, sio_auth={"bearer_token": bad})
    assert ei.value.reason == "malformed_token"
    with pytest.raises(AuthError):
        extract_tokens(S, sio_auth={"id_token": bad}, cookies={S.id_token_cookie: "c"})


@pytest.mark.parametrize("payload", [None, "a string", ["bearer_token", "x"], 42])
def test_non_mapping_socketio_payload_carries_nothing(payload) -> None:
    t = extract_tokens(S, sio_auth=payload, cookies={S.auth_token_cookie: "c"})
    assert (t.access, t.access_source) == ("c", C)


@pytest.mark.parametrize("value,expected", [
    ("Bearer abc", "abc"), ("bearer abc", "abc"), ("BEARER   abc  ", "abc"), ("Bearer", None),
    ("Bearer ", None), ("Basic dXNlcjpwYXNz", None), ("", None), (None, None), ("abc", None),
])
def test_bearer_parsing(value, expected) -> None:
    assert bearer_from_authorization(value) == expected


def test_non_bearer_authorization_falls_through_to_query() -> None:
    t = extract_tokens(S, headers={"authorization": "Basic dXNlcjpwYXNz"}, query={"bearer_token": "q"})
    assert (t.access, t.access_source) == ("q", Q)


def test_headers_from_pairs() -> None:
    h = headers_from_pairs([(b"Authorization", b"Bearer one"), (b"authorization", b"Bearer two"),
                            (b"Cookie", b"a=1"), (b"cookie", b"b=2"), ("X-ID-Token", "idt")])
    assert h == {"authorization": "Bearer one", "cookie": "a=1; b=2", "x-id-token": "idt"}
    t = extract_tokens(S, headers=h)
    assert (t.access, t.id) == ("one", "idt")


def test_tokens_repr_hides_values() -> None:
    assert "secret-token" not in repr(Tokens(access="secret-token", id="secret-token"))


# --- cookie parser -----------------------------------------------------------------------

@pytest.mark.parametrize("header,expected", [
    ("", {}),
    ("a=1", {"a": "1"}),
    ("a=1; b=2", {"a": "1", "b": "2"}),
    ("a=1;b=2;;; ;", {"a": "1", "b": "2"}),
    ("  a  =  1  ", {"a": "1"}),
    ('a="quoted"', {"a": "quoted"}),
    ('a="', {"a": '"'}),
    ("a=1; a=2", {"a": "1"}),                    # first wins
    ("novalue; b=2", {"b": "2"}),
    ("=orphan; b=2", {"b": "2"}),
    ("a=x=y==", {"a": "x=y=="}),                 # only the first '=' splits
    ("a=1\x00; b=2", {"a": "1\x00", "b": "2"}),
    ("bad name=1; c=3", {"c": "3"}),             # whitespace inside a name
    ("\x01=1; c=3", {"c": "3"}),
    ("\u00e9t\u00e9=\u2603", {"\u00e9t\u00e9": "\u2603"}),
    (";;;;;;", {}),
    ("====", {}),
])
def test_cookie_parser_table(header, expected) -> None:
    assert parse_cookie_header(header) == expected


def test_cookie_parser_bounds_pairs() -> None:
    out = parse_cookie_header("; ".join(f"c{i}=v" for i in range(10_000)))
    assert 0 < len(out) <= 256


def test_cookie_parser_non_string() -> None:
    assert parse_cookie_header(b"a=1") == {}  # type: ignore[arg-type]


@given(st.text())
def test_cookie_parser_never_raises(header: str) -> None:
    out = parse_cookie_header(header)
    assert all(isinstance(k, str) and k and isinstance(v, str) for k, v in out.items())


@given(st.dictionaries(st.sampled_from(["authorization", "x-id-token", "cookie", "other"]), st.text()),
       st.dictionaries(st.sampled_from(["bearer_token", "id_token", "x"]), st.text()),
       st.dictionaries(st.sampled_from(["bearer_token", "id_token", "x"]), st.text() | st.none()))
def test_extract_never_raises_on_string_input(headers, query, sio) -> None:
    t = extract_tokens(S, headers=headers, query=query, sio_auth=sio)
    for value in (t.access, t.id):
        assert value is None or (value == value.strip() and value)
