"""The coordinator's settings: the ``[siege]`` section of the siège node's TOML.

Owns parsing and validating the schedule and the email alerts; every mistake is a
``SettingsError`` naming the key and what to write, raised when the role attaches — before
the node serves anything. Must never print a secret.

    [siege]
    interval_minutes = 60                # a round every hour, or:
    times = ["12:30", "19:00"]           # at these local times every day, or:
    continuous = true                    # rounds back to back (pause_seconds = 5 between)
    retention_lag_days = 30              # a site without a complete sync this long stops
                                         # holding back the purge of old events (resync)

    [[siege.bandwidth]]                  # cap a site's exchanges (the till shares the line)
    site = "lyon"
    kbit = 512
    from = "08:00"                       # optional: only between these local times
    to = "19:30"

    [siege.alerts]
    smtp_host = "smtp.example.net"
    tls = "starttls"                     # "starttls" (port 587), "tls" (implicit, port 465)
                                         # or "none" (port 25: a relay on loopback or LAN only)
    smtp_port = 587                      # by default the port of the tls mode
    user = "alerts@example.net"
    password_env = "SIEGE_SMTP_PASSWORD" # or password_file = "smtp.pw" (0600)
    sender = "siege-sync <alerts@example.net>"
    to = ["it@example.net"]
    every_minutes = 60                   # at most one email per kind of alert in this time
    unreachable_after_minutes = 120
    clock_offset_seconds = 60
    cert_days = 30                       # certificates expiring within this many days
    disk_free_mb = 1024                  # free disk where the siège's database lives
    log_events = 5000000                 # events kept in the siège's log (a site lagging?)
    ca_file = "/etc/ssl/smtp-ca.pem"     # optional: the SMTP server's CA, if private
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time as daytime
from pathlib import Path
from typing import Any

from ..node.model.config import ConfigError, secret


class SettingsError(Exception):
    pass


TLS_MODES = {"starttls": 587, "tls": 465, "none": 25}  # mode -> its usual port


@dataclass(frozen=True)
class Schedule:
    interval_minutes: float | None = None
    times: tuple[daytime, ...] = ()
    continuous: bool = False  # a round as soon as the previous one ends (after a pause)
    pause_seconds: float = 5.0

    @property
    def active(self) -> bool:
        return self.continuous or self.interval_minutes is not None or bool(self.times)


@dataclass(frozen=True)
class Alerts:
    smtp_host: str
    smtp_port: int
    sender: str
    to: tuple[str, ...]
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    every_minutes: float = 60.0
    unreachable_after_minutes: float = 120.0
    clock_offset_seconds: float = 60.0
    cert_days: int = 30
    ca_file: Path | None = None
    disk_free_mb: float = 1024.0  # below this, where the siège's database lives
    log_events: float = 5_000_000  # more events than this kept in the siège's log
    tls: str = "starttls"  # TLS_MODES


@dataclass(frozen=True)
class Bandwidth:
    """A cap on one site's exchanges, always or between two local times of day."""

    site: str
    bits_per_s: float
    start: daytime | None = None
    end: daytime | None = None

    def applies(self, now: daytime) -> bool:
        if self.start is None or self.end is None:
            return True
        if self.start <= self.end:
            return self.start <= now < self.end
        return now >= self.start or now < self.end  # across midnight


@dataclass(frozen=True)
class Settings:
    schedule: Schedule = Schedule()
    alerts: Alerts | None = None
    retention_lag_days: float = 30.0  # a site silent this long stops holding back the purge
    bandwidth: tuple[Bandwidth, ...] = ()

    def cap(self, site: str, now: daytime) -> float | None:
        """The bits/s cap on ``site``'s exchanges now (the lowest that applies), if any."""
        caps = [b.bits_per_s for b in self.bandwidth if b.site == site and b.applies(now)]
        return min(caps) if caps else None


def parse(raw: Mapping[str, Any], where: str = "[siege]",
          config_path: Path | None = None) -> Settings:
    unknown = set(raw) - {"interval_minutes", "times", "alerts", "retention_lag_days",
                          "continuous", "pause_seconds", "bandwidth"}
    if unknown:
        raise SettingsError(f"{where}: unknown keys {sorted(unknown)} (known: interval_minutes, "
                            "times, continuous, pause_seconds, retention_lag_days, bandwidth, "
                            "alerts)")
    lag = raw.get("retention_lag_days", 30)
    if not isinstance(lag, int | float) or lag <= 0:
        raise SettingsError(f"{where} retention_lag_days = {lag!r}: give a number of days > 0")
    interval = raw.get("interval_minutes")
    if interval is not None and (not isinstance(interval, int | float) or interval <= 0):
        raise SettingsError(f"{where} interval_minutes = {interval!r}: give a number of "
                            "minutes > 0")
    times = [_time(text, f"{where} times") for text in raw.get("times", [])]
    continuous = raw.get("continuous", False)
    pause = raw.get("pause_seconds", 5.0)
    if not isinstance(continuous, bool):
        raise SettingsError(f"{where} continuous must be true or false")
    if not isinstance(pause, int | float) or pause < 0:
        raise SettingsError(f"{where} pause_seconds must be a number of seconds >= 0")
    if sum([interval is not None, bool(times), continuous]) > 1:
        raise SettingsError(f"{where}: give one of interval_minutes, times, continuous")
    alerts_raw = raw.get("alerts")
    alerts = None
    if alerts_raw is not None:
        if not isinstance(alerts_raw, dict):
            raise SettingsError(f"{where}: alerts must be a section [siege.alerts]")
        alerts = _alerts(alerts_raw, f"{where[:-1]}.alerts]", config_path)
    bandwidth = tuple(_bandwidth(entry, f"{where[:-1]}.bandwidth]")
                      for entry in raw.get("bandwidth", []))
    return Settings(Schedule(float(interval) if interval is not None else None, tuple(times),
                             continuous, float(pause)), alerts, float(lag), bandwidth)


def _time(text: object, where: str) -> daytime:
    try:
        hours, minutes = str(text).split(":")
        return daytime(int(hours), int(minutes))
    except ValueError:
        raise SettingsError(f"{where}: {text!r} is not a time; write \"HH:MM\"") from None


def _bandwidth(raw: object, where: str) -> Bandwidth:
    if not isinstance(raw, dict):
        raise SettingsError(f"{where}: write [[siege.bandwidth]] sections with site and kbit")
    unknown = set(raw) - {"site", "kbit", "from", "to"}
    if unknown:
        raise SettingsError(f"{where}: unknown keys {sorted(unknown)}")
    site, kbit = raw.get("site"), raw.get("kbit")
    if not isinstance(site, str) or not site:
        raise SettingsError(f"{where}: site = \"SITE\" is required")
    if not isinstance(kbit, int | float) or kbit <= 0:
        raise SettingsError(f"{where} ({site}): kbit must be a number > 0 (e.g. 512)")
    if ("from" in raw) != ("to" in raw):
        raise SettingsError(f"{where} ({site}): give both from and to, or neither")
    start = _time(raw["from"], where) if "from" in raw else None
    end = _time(raw["to"], where) if "to" in raw else None
    return Bandwidth(site, float(kbit) * 1000, start, end)


def _alerts(raw: dict[str, Any], where: str, config_path: Path | None) -> Alerts:
    known = {"smtp_host", "smtp_port", "user", "password", "password_env", "password_file",
             "sender", "to", "every_minutes", "unreachable_after_minutes",
             "clock_offset_seconds", "cert_days", "ca_file", "disk_free_mb", "log_events",
             "tls"}
    unknown = set(raw) - known
    if unknown:
        raise SettingsError(f"{where}: unknown keys {sorted(unknown)}")
    for key in ("smtp_host", "sender"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise SettingsError(f"{where}: {key} = \"...\" is required")
    to = raw.get("to")
    if not isinstance(to, list) or not to or not all(isinstance(t, str) and "@" in t
                                                     for t in to):
        raise SettingsError(f"{where}: to = [\"someone@example.net\", ...] is required")
    tls = raw.get("tls", "starttls")
    if tls not in TLS_MODES:
        raise SettingsError(f"{where}: tls = {tls!r}: write \"starttls\" (port 587), \"tls\" "
                            "(implicit TLS, port 465) or \"none\" (a relay on loopback or the "
                            "LAN only)")
    if tls == "none" and not _near(raw["smtp_host"]):
        raise SettingsError(f"{where}: tls = \"none\" sends the alerts and the SMTP password "
                            f"in clear: only to a relay on loopback or the LAN, and "
                            f"{raw['smtp_host']} is not one; use \"starttls\" or \"tls\"")
    port = raw.get("smtp_port", TLS_MODES[tls])
    if not isinstance(port, int) or not 0 < port < 65536:
        raise SettingsError(f"{where}: smtp_port must be a port number ({TLS_MODES[tls]} "
                            f"with tls = {tls!r})")
    try:
        password = secret(raw, where, config_path)
    except ConfigError as exc:
        raise SettingsError(str(exc)) from None
    ca = raw.get("ca_file")
    ca_path = Path(ca) if ca else None
    if ca_path is not None and config_path is not None and not ca_path.is_absolute():
        ca_path = config_path.parent / ca_path
    if ca_path is not None and not ca_path.is_file():
        raise SettingsError(f"{where}: ca_file {ca_path} does not exist")
    numbers = {}
    for key, default in (("every_minutes", 60.0), ("unreachable_after_minutes", 120.0),
                         ("clock_offset_seconds", 60.0), ("cert_days", 30),
                         ("disk_free_mb", 1024.0), ("log_events", 5_000_000)):
        value = raw.get(key, default)
        if not isinstance(value, int | float) or value < 0:
            raise SettingsError(f"{where}: {key} must be a number >= 0")
        numbers[key] = value
    return Alerts(smtp_host=raw["smtp_host"], smtp_port=port, sender=raw["sender"],
                  to=tuple(to), user=raw.get("user"), password=password,
                  every_minutes=float(numbers["every_minutes"]),
                  unreachable_after_minutes=float(numbers["unreachable_after_minutes"]),
                  clock_offset_seconds=float(numbers["clock_offset_seconds"]),
                  cert_days=int(numbers["cert_days"]), ca_file=ca_path,
                  disk_free_mb=float(numbers["disk_free_mb"]),
                  log_events=float(numbers["log_events"]), tls=tls)


def _near(host: str) -> bool:
    """Whether ``host`` is this machine or on a private network (every address it has)."""
    try:
        found = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(found) and all(
        ipaddress.ip_address(a.split("%")[0]).is_loopback
        or ipaddress.ip_address(a.split("%")[0]).is_private for a in found)
