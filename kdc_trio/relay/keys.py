"""How a session's relay channel is named (KDCube's names, so both can share one Redis)."""

from __future__ import annotations

from dataclasses import dataclass

PROJECT_SESSION = "__project__"  # the pseudo-session of project-wide listeners


@dataclass(frozen=True, slots=True)
class SessionKey:
    tenant: str
    project: str
    session_id: str

    def channel(self, prefix: str) -> str:
        """`<identity>.<tenant>:<project>:chat.events.<session_id>`; a missing tenant/project is `-`."""
        return f"{prefix}.{self.tenant or '-'}:{self.project or '-'}:chat.events.{self.session_id}"

    @classmethod
    def project_wide(cls, tenant: str, project: str) -> "SessionKey":
        return cls(tenant, project, PROJECT_SESSION)
