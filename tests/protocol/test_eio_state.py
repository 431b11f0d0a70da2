"""The Engine.IO session states: one table, everything else refused."""

from __future__ import annotations

import itertools

import pytest

from protocol.eio_state import TRANSITIONS, EIOEvent, EIOState, initial_state, transition
from protocol.errors import RemoteProtocolError

S, E = EIOState, EIOEvent
ALLOWED = {
    (S.POLLING, E.PROBE_CONNECT): S.PROBING,
    (S.PROBING, E.PROBE): S.UPGRADING,
    (S.UPGRADING, E.PROBE): S.UPGRADING,
    (S.UPGRADING, E.UPGRADE): S.WEBSOCKET,
    (S.PROBING, E.PROBE_FAILED): S.POLLING,
    (S.UPGRADING, E.PROBE_FAILED): S.POLLING,
    **{(s, E.CLOSE): S.CLOSED for s in S},
}


@pytest.mark.parametrize("state,event", list(itertools.product(S, E)))
def test_every_pair(state, event):
    if (state, event) in ALLOWED:
        assert transition(state, event) is ALLOWED[(state, event)]
    else:
        with pytest.raises(RemoteProtocolError, match=f"{event.value} is not allowed while the session is"):
            transition(state, event)


def test_the_table_is_exactly_the_allowed_moves():
    assert TRANSITIONS == ALLOWED


def test_sessions_start_on_their_transport():
    assert initial_state("polling") is S.POLLING
    assert initial_state("websocket") is S.WEBSOCKET
    with pytest.raises(RemoteProtocolError):
        initial_state("flash")


def test_an_upgraded_or_closed_session_cannot_be_probed_again():
    for state in (S.PROBING, S.UPGRADING, S.WEBSOCKET, S.CLOSED):
        with pytest.raises(RemoteProtocolError):
            transition(state, E.PROBE_CONNECT)
