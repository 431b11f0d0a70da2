"""The Engine.IO session states: one table, everything else refused."""

from __future__ import annotations

import itertools

import pytest

from protocol.eio_state import TRANSITIONS, EIOEvent, EIOState, initial_state, transition
from protocol.errors import RemoteProtocolError

S, E = EIOState, EIOEvent
# The moves the module's docstring describes, written out independently of its table.
ALLOWED = {
    (S.POLLING, E.PROBE_CONNECT): S.PROBING,
    (S.PROBING, E.PROBE): S.UPGRADING,
    (S.UPGRADING, E.PROBE): S.UPGRADING,
    (S.UPGRADING, E.UPGRADE): S.WEBSOCKET,
    (S.PROBING, E.PROBE_FAILED): S.POLLING,
    (S.UPGRADING, E.PROBE_FAILED): S.POLLING,
    (S.POLLING, E.CLOSE): S.CLOSED,
    (S.PROBING, E.CLOSE): S.CLOSED,
    (S.UPGRADING, E.CLOSE): S.CLOSED,
    (S.WEBSOCKET, E.CLOSE): S.CLOSED,
    (S.CLOSED, E.CLOSE): S.CLOSED,
}


@pytest.mark.parametrize("state,event", list(itertools.product(S, E)))
def test_every_pair(state, event):
    if (state, event) in ALLOWED:
        assert transition(state, event) is ALLOWED[(state, event)]
    else:
        with pytest.raises(RemoteProtocolError,
                           match=f"^{event.value} is not allowed while the session is {state.value}$") as info:
            transition(state, event)
        assert info.value.reason == "bad_state"


def test_the_table_is_exactly_the_allowed_moves():
    assert TRANSITIONS == ALLOWED
    assert len(list(itertools.product(S, E))) - len(TRANSITIONS) == 14, "14 refused pairs"


@pytest.mark.parametrize("state", list(S))
def test_close_from_every_state(state):
    assert transition(state, E.CLOSE) is S.CLOSED


def test_closed_is_final():
    for event in E:
        if event is not E.CLOSE:
            with pytest.raises(RemoteProtocolError):
                transition(S.CLOSED, event)


def test_sessions_start_on_their_transport():
    assert initial_state("polling") is S.POLLING
    assert initial_state("websocket") is S.WEBSOCKET


@pytest.mark.parametrize("transport", ["flash", "", "POLLING", "websocket ", "webtransport"])
def test_unknown_transports_are_refused(transport):
    with pytest.raises(RemoteProtocolError, match="unknown transport") as info:
        initial_state(transport)
    assert info.value.reason == "unknown_transport"


def test_the_upgrade_dance_and_a_failed_probe():
    state = initial_state("polling")
    for event, expected in [(E.PROBE_CONNECT, S.PROBING), (E.PROBE_FAILED, S.POLLING),
                            (E.PROBE_CONNECT, S.PROBING), (E.PROBE, S.UPGRADING), (E.PROBE, S.UPGRADING),
                            (E.UPGRADE, S.WEBSOCKET), (E.CLOSE, S.CLOSED)]:
        state = transition(state, event)
        assert state is expected


def test_an_upgraded_or_closed_session_cannot_be_probed_or_upgraded_again():
    for state in (S.PROBING, S.UPGRADING, S.WEBSOCKET, S.CLOSED):
        with pytest.raises(RemoteProtocolError):
            transition(state, E.PROBE_CONNECT)
    for state in (S.POLLING, S.PROBING, S.WEBSOCKET, S.CLOSED):
        with pytest.raises(RemoteProtocolError):
            transition(state, E.UPGRADE)
