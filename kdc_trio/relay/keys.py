"""How a session's relay channel is named (KDCube's names, so both can share one Redis)."""

from __future__ import annotations

PROJECT_SESSION = "__project__"  # the pseudo-session of project-wide listeners


class SessionKey:
    """(tenant, project, session_id), immutable; its hash is computed once (a key is looked up
    several times per relayed event: logs, subscriptions, outboxes)."""

    __slots__ = ("tenant", "project", "session_id", "_hash")

    def __init__(self, tenant: str, project: str, session_id: str) -> None:
        setter = object.__setattr__
        setter(self, "tenant", tenant)
        setter(self, "project", project)
        setter(self, "session_id", session_id)
        setter(self, "_hash", hash((tenant, project, session_id)))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"SessionKey is immutable: cannot set {name}")

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if type(other) is not SessionKey:
            return NotImplemented
        return (self._hash == other._hash and self.session_id == other.session_id and self.tenant == other.tenant
                and self.project == other.project)

    def __repr__(self) -> str:
        return f"SessionKey(tenant={self.tenant!r}, project={self.project!r}, session_id={self.session_id!r})"

    def __reduce__(self):
        return (SessionKey, (self.tenant, self.project, self.session_id))

    def channel(self, prefix: str) -> str:
        """`<identity>.<tenant>:<project>:chat.events.<session_id>`; a missing tenant/project is `-`."""
        return f"{prefix}.{self.tenant or '-'}:{self.project or '-'}:chat.events.{self.session_id}"

    @classmethod
    def project_wide(cls, tenant: str, project: str) -> "SessionKey":
        return cls(tenant, project, PROJECT_SESSION)
