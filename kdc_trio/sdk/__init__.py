"""Producer API for bundle authors."""

from kdc_trio.sdk.communicator import ChatCommunicator
from kdc_trio.sdk.emitters import AIBEmitters

__all__ = ["AIBEmitters", "ChatCommunicator"]
