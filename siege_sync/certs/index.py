"""The CA's ledger of issued certificates (``index.json`` in the CA directory).

Owns the record of every certificate the CA signed — name, kind, roles, SANs, validity,
revocation, which renewal superseded it — its JSON form, and the status derived from it
(valid, expired, revoked, superseded). The CRL is built from this ledger, never the reverse.

Must never sign anything or hold key material; values are immutable and a change returns a
new ``Index`` that the caller saves.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from .errors import CertError
from .files import write_atomic
from .identity import Kind, Role
from .revocation import Reason, RevokedEntry

FORMAT = 1
SHORT_SERIAL = 12
MIN_SERIAL_PREFIX = 6


class Status(StrEnum):
    VALID = "valid"
    EXPIRED = "expired"
    REVOKED = "revoked"
    SUPERSEDED = "superseded"


def serial_hex(serial: int) -> str:
    return f"{serial:x}"


def short_serial(serial: int) -> str:
    return serial_hex(serial)[:SHORT_SERIAL]


@dataclass(frozen=True)
class Record:
    """One certificate the CA issued."""

    serial: int
    name: str
    kind: Kind
    roles: frozenset[Role]
    not_before: datetime
    not_after: datetime
    issued_at: datetime
    dns: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    revoked_at: datetime | None = None
    reason: Reason | None = None
    superseded_by: int | None = None
    renewed_from: int | None = None

    def status(self, now: datetime) -> Status:
        if self.revoked_at is not None:
            return Status.REVOKED
        if now > self.not_after:
            return Status.EXPIRED
        if self.superseded_by is not None:
            return Status.SUPERSEDED
        return Status.VALID

    def to_json(self) -> dict[str, Any]:
        return {
            "serial": serial_hex(self.serial),
            "name": self.name,
            "kind": self.kind.value,
            "roles": sorted(r.value for r in self.roles),
            "dns": list(self.dns),
            "ips": list(self.ips),
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "issued_at": self.issued_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "reason": self.reason.value if self.reason else None,
            "superseded_by": serial_hex(self.superseded_by) if self.superseded_by else None,
            "renewed_from": serial_hex(self.renewed_from) if self.renewed_from else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        def when(key: str) -> datetime | None:
            value = data.get(key)
            return datetime.fromisoformat(value) if value else None

        def serial(key: str) -> int | None:
            value = data.get(key)
            return int(value, 16) if value else None

        return cls(
            serial=int(data["serial"], 16),
            name=data["name"],
            kind=Kind(data["kind"]),
            roles=frozenset(Role(r) for r in data["roles"]),
            dns=tuple(data.get("dns", ())),
            ips=tuple(data.get("ips", ())),
            not_before=datetime.fromisoformat(data["not_before"]),
            not_after=datetime.fromisoformat(data["not_after"]),
            issued_at=datetime.fromisoformat(data["issued_at"]),
            revoked_at=when("revoked_at"),
            reason=Reason(data["reason"]) if data.get("reason") else None,
            superseded_by=serial("superseded_by"),
            renewed_from=serial("renewed_from"),
        )


@dataclass(frozen=True)
class Index:
    """Everything the CA issued, plus the mesh name and the last CRL number."""

    mesh: str
    crl_number: int = 0
    records: tuple[Record, ...] = field(default_factory=tuple)

    def names(self) -> list[str]:
        return sorted({r.name for r in self.records})

    def for_name(self, name: str) -> list[Record]:
        """Certificates issued to ``name``, oldest first."""
        return sorted((r for r in self.records if r.name == name), key=lambda r: r.issued_at)

    def live(self, name: str, now: datetime) -> Record | None:
        """The valid, current certificate of ``name`` (at most one exists)."""
        live = [r for r in self.for_name(name) if r.status(now) is Status.VALID]
        return live[-1] if live else None

    def kind_of(self, name: str) -> Kind | None:
        records = self.for_name(name)
        return records[-1].kind if records else None

    def get(self, serial: int) -> Record:
        for record in self.records:
            if record.serial == serial:
                return record
        raise CertError(f"no certificate with serial {serial_hex(serial)} in this CA's index")

    def match_serial(self, text: str) -> Record | None:
        """The record whose hex serial is ``text`` or starts with it (at least 6 digits)."""
        cleaned = text.strip().lower().replace(":", "").removeprefix("0x")
        if len(cleaned) < MIN_SERIAL_PREFIX or any(c not in "0123456789abcdef" for c in cleaned):
            return None
        found = [r for r in self.records if serial_hex(r.serial).startswith(cleaned)]
        if len(found) > 1:
            raise CertError(
                f"serial prefix {text!r} matches {len(found)} certificates: give more digits"
            )
        return found[0] if found else None

    def replacing(self, *records: Record) -> Index:
        changed = {r.serial: r for r in records}
        return replace(self, records=tuple(changed.get(r.serial, r) for r in self.records))

    def adding(self, record: Record) -> Index:
        if any(r.serial == record.serial for r in self.records):
            raise CertError(f"serial {serial_hex(record.serial)} was already issued")
        return replace(self, records=(*self.records, record))

    def revoked_entries(self) -> Iterable[RevokedEntry]:
        for r in self.records:
            if r.revoked_at is not None:
                yield RevokedEntry(r.serial, r.revoked_at, r.reason or Reason.UNSPECIFIED)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "mesh": self.mesh,
            "crl_number": self.crl_number,
            "certificates": [r.to_json() for r in self.records],
        }


def load_index(path: Path) -> Index:
    """Read ``index.json``, or raise ``CertError`` saying what is wrong with it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CertError(f"{path} is missing: this is not a siege-certs CA directory") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise CertError(f"{path} is not valid JSON ({exc}): restore it from a backup") from None
    try:
        if data.get("format") != FORMAT:
            raise CertError(
                f"{path} has format {data.get('format')!r}; this siege-certs reads format {FORMAT}"
            )
        return Index(
            mesh=data["mesh"],
            crl_number=int(data["crl_number"]),
            records=tuple(Record.from_json(r) for r in data["certificates"]),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CertError(f"{path} is damaged ({exc!r}): restore it from a backup") from None


def save_index(path: Path, index: Index) -> None:
    """Replace ``index.json`` atomically."""
    text = json.dumps(index.to_json(), indent=2) + "\n"
    write_atomic(path, text.encode("utf-8"))
