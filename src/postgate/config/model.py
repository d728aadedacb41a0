"""config.model — the configuration values, one frozen dataclass per TOML section.

SYNOPSIS
    Config, ListenerConfig, ListenerRole, TlsConfig, LimitsConfig, RoutingConfig,
    QueueConfig, DeliveryConfig, AuthConfig, LogConfig, ConfigError, ConfigProblem,
    SECTIONS, KeySpec, key_spec(field)

DESCRIPTION
    Every key is defined once, here, like Postfix's mail_params.h: its name and type
    (the dataclass field), its default, the parser that turns TOML into the typed
    value, and a one-line reason it exists (KeySpec in the field's metadata).
    config.parse, config.render and docs/configuration.md are all driven by, or
    checked against, these definitions.

    Defaults are the safe choice: no relay without AUTH (trusted_networks empty),
    submission needs TLS and AUTH, TLS 1.2 or newer, CRAM-MD5 off.

SEE ALSO
    config.parse, config.render, docs/configuration.md
"""

from __future__ import annotations

import enum
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import Field, dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from postgate.config import values as v
from postgate.config.values import IPNetwork, ValueEnv


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with a config file. ``line`` is None when the key is missing
    or the problem has no single place (the file as a whole)."""

    source: str
    line: int | None
    key: str
    reason: str

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        return f"{where}: {self.key}: {self.reason}" if self.key else f"{where}: {self.reason}"


class ConfigError(Exception):
    """The file cannot be used. Carries every problem found, one per line, each as
    ``file:line: dotted.key: reason``, ready to print as a CLI error."""

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class ListenerRole(enum.StrEnum):
    """What a listening port is for (RFC 6409 separates submission from relay)."""

    MX = "mx"  # port 25: STARTTLS offered, AUTH only after TLS
    SUBMISSION = "submission"  # port 587: STARTTLS and AUTH required (RFC 6409)
    SUBMISSIONS = "submissions"  # port 465: implicit TLS, AUTH required (RFC 8314)

    @property
    def default_port(self) -> int:
        return {"mx": 25, "submission": 587, "submissions": 465}[self.value]

    @property
    def requires_tls(self) -> bool:
        """Submission carries passwords, so it never runs in clear (RFC 8314 3)."""
        return self is not ListenerRole.MX

    @property
    def implicit_tls(self) -> bool:
        return self is ListenerRole.SUBMISSIONS

    @property
    def requires_auth(self) -> bool:
        return self is not ListenerRole.MX


DefaultFrom = Callable[[ValueEnv, Mapping[str, Any]], Any]


@dataclass(frozen=True, slots=True)
class KeySpec:
    """How one key is read, shown and documented.

    ``parse`` turns the raw TOML value into the field's type (raises ValueError).
    ``doc`` is the one-line reason the key exists (used in the starter file).
    ``default_from`` computes a default that depends on other values (data_dir, the
    listener's role); ``default_doc`` is how the docs describe that default.
    ``to_toml`` turns a typed value back into a raw TOML value for rendering
    ("5m" rather than 300.0).
    """

    parse: Callable[[object, ValueEnv], Any]
    doc: str
    default_from: DefaultFrom | None = None
    default_doc: str | None = None
    to_toml: Callable[[Any], object] | None = None


def _key(
    parse: Callable[[object, ValueEnv], Any],
    doc: str,
    *,
    default_from: DefaultFrom | None = None,
    default_doc: str | None = None,
    to_toml: Callable[[Any], object] | None = None,
) -> dict[str, KeySpec]:
    return {"postgate": KeySpec(parse, doc, default_from, default_doc, to_toml)}


def key_spec(f: Field[Any]) -> KeySpec:
    spec = f.metadata["postgate"]
    assert isinstance(spec, KeySpec)
    return spec


def _under_data_dir(name: str) -> DefaultFrom:
    return lambda env, parsed: env.data_dir / name


def _fqdn(env: ValueEnv, parsed: Mapping[str, Any]) -> str:
    found = socket.getfqdn()
    try:
        return v.hostname(found, env)
    except ValueError:
        raise ValueError(
            f"not set, and this machine's name {found!r} is not a fully qualified domain "
            "name; set it to the name the MX record points at"
        ) from None


_DURATION = v.duration_to_toml
_SIZE = v.format_size

SASL_MECHANISMS = ("PLAIN", "LOGIN", "SCRAM-SHA-256", "XOAUTH2", "OAUTHBEARER", "CRAM-MD5")


@dataclass(frozen=True, slots=True)
class ServerSection:
    """[server]; its keys land directly on Config (hostname, data_dir)."""

    hostname: str = field(
        metadata=_key(
            v.hostname,
            "FQDN used in the banner, EHLO and Received headers; the name the MX points at",
            default_from=_fqdn,
            default_doc="this machine's FQDN (socket.getfqdn())",
        )
    )
    data_dir: Path = field(
        default=Path("/var/lib/postgate"),
        metadata=_key(v.path, "Directory holding the queue, mailboxes and user database"),
    )
    workers: int = field(
        default=1,
        metadata=_key(v.worker_count, "Server processes sharing the listening ports"),
    )


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    name: str = field(
        metadata=_key(
            v.text,
            "Label used in logs and metrics",
            default_from=lambda env, parsed: str(parsed["role"]),
            default_doc="the role",
        )
    )
    role: ListenerRole = field(
        metadata=_key(v.enum_choice(ListenerRole), "mx, submission or submissions")
    )
    address: str = field(
        metadata=_key(
            v.ip_address,
            "IP address to bind; 0.0.0.0 for all IPv4, :: for all IPv6",
            default_from=lambda env, parsed: "0.0.0.0",
            default_doc='"0.0.0.0"',
        )
    )
    port: int = field(
        metadata=_key(
            v.port,
            "TCP port",
            default_from=lambda env, parsed: ListenerRole(parsed["role"]).default_port,
            default_doc="by role: mx 25, submission 587, submissions 465",
        )
    )
    proxy_protocol: bool = field(
        default=False,
        metadata=_key(v.boolean, "Expect a HAProxy PROXY v2 header before SMTP"),
    )


@dataclass(frozen=True, slots=True)
class TlsConfig:
    cert_file: Path = field(metadata=_key(v.path, "PEM certificate chain (fullchain.pem)"))
    key_file: Path = field(metadata=_key(v.path, "PEM private key (privkey.pem)"))
    min_version: str = field(
        default="1.2", metadata=_key(v.tls_version, "Oldest TLS version accepted: 1.2 or 1.3")
    )
    sni: Mapping[str, tuple[Path, Path]] = field(
        default_factory=lambda: MappingProxyType({}),
        metadata=_key(
            v.sni_certificates,
            "More certificates, chosen by the name the client asks for (SNI)",
            to_toml=lambda pairs: {name: [str(c), str(k)] for name, (c, k) in pairs.items()},
        ),
    )


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_message_size: int = field(
        default=36_700_160,
        metadata=_key(v.size, "Largest message accepted (SIZE, RFC 1870)", to_toml=_SIZE),
    )
    max_header_size: int = field(
        default=1_048_576,
        metadata=_key(v.size, "Largest header section accepted", to_toml=_SIZE),
    )
    max_recipients: int = field(
        default=100, metadata=_key(v.positive_int, "Most RCPT TO per transaction")
    )
    max_bad_commands: int = field(
        default=20, metadata=_key(v.positive_int, "Errors before the client is disconnected")
    )
    command_timeout: float = field(
        default=300.0,
        metadata=_key(v.duration, "Idle time allowed between commands", to_toml=_DURATION),
    )
    data_timeout: float = field(
        default=600.0,
        metadata=_key(v.duration, "Time allowed for the whole DATA/BDAT body", to_toml=_DURATION),
    )
    max_connections: int = field(
        default=1000,
        metadata=_key(v.positive_int, "Simultaneous SMTP connections in total, per worker process"),
    )
    max_connections_per_client: int = field(
        default=50,
        metadata=_key(v.positive_int, "Simultaneous connections from one IP, per worker process"),
    )


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    local_domains: tuple[str, ...] = field(
        metadata=_key(v.domain_list, "Domains whose mail is delivered here")
    )
    alias_file: Path | None = field(
        default=None, metadata=_key(v.path, "Postfix-virtual-style alias file")
    )
    catch_all: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType({}),
        metadata=_key(v.catch_all, "Per-domain address for mail to unknown local users"),
    )
    postmaster: str | None = field(
        default=None,
        metadata=_key(v.mailbox, "Where postmaster@ goes when no user or alias has it"),
    )
    trusted_networks: tuple[IPNetwork, ...] = field(
        default=(),
        metadata=_key(
            v.networks,
            "Networks that may relay without AUTH (empty: nobody)",
            to_toml=lambda nets: [str(n) for n in nets],
        ),
    )


@dataclass(frozen=True, slots=True)
class QueueConfig:
    path: Path = field(
        metadata=_key(
            v.path,
            "SQLite queue database",
            default_from=_under_data_dir("queue.db"),
            default_doc="<data_dir>/queue.db",
        )
    )
    retry_schedule: tuple[float, ...] = field(
        default=(300.0, 600.0, 1200.0, 2400.0, 4000.0),
        metadata=_key(
            v.duration_list,
            "Waits between delivery attempts; the last repeats until max_lifetime",
            to_toml=lambda waits: [_DURATION(w) for w in waits],
        ),
    )
    max_lifetime: float = field(
        default=432_000.0,
        metadata=_key(v.duration, "Age at which undeliverable mail bounces", to_toml=_DURATION),
    )
    delay_warning_after: float = field(
        default=14_400.0,
        metadata=_key(
            v.duration_or_zero,
            "Age at which the sender gets a delay DSN; 0 turns it off",
            to_toml=_DURATION,
        ),
    )
    lease_seconds: float = field(
        default=300.0,
        metadata=_key(v.duration, "How long a delivery worker owns a recipient", to_toml=_DURATION),
    )
    delivery_concurrency: int = field(
        default=20, metadata=_key(v.positive_int, "Deliveries in flight at once")
    )
    hold_incoming: bool = field(
        default=False,
        metadata=_key(
            v.boolean,
            "Queue received mail on hold: nothing is delivered until `postgate queue release`"
            " (maintenance, migrations, benchmarks)",
        ),
    )


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    maildir_root: Path = field(
        metadata=_key(
            v.path,
            "Root of local mailboxes: <maildir_root>/<domain>/<localpart>/",
            default_from=_under_data_dir("mail"),
            default_doc="<data_dir>/mail",
        )
    )
    relay_host: str | None = field(
        default=None,
        metadata=_key(v.relay_host, "Send all outbound mail via this host instead of MX"),
    )
    dns_servers: tuple[str, ...] = field(
        default=(),
        metadata=_key(v.dns_servers, "Resolvers to use; empty means the system resolver"),
    )
    sending_addresses: tuple[str, ...] = field(
        default=(),
        metadata=_key(
            v.ip_addresses,
            "Public IPs this server sends from (for `postgate dns records/check`: SPF, PTR)",
            to_toml=list,
        ),
    )
    relay_username: str | None = field(
        default=None,
        metadata=_key(v.text, "AUTH user name at the relay host(s); sent only over TLS"),
    )
    relay_password_file: Path | None = field(
        default=None,
        metadata=_key(v.path, "File holding the relay password (first line), mode 0600"),
    )
    sender_relay_hosts: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType({}),
        metadata=_key(
            v.domain_map(v.relay_host, '"[host]:port"'),
            "Relay host per sender domain; overrides relay_host for that domain's mail",
        ),
    )
    smtp_port: int = field(
        default=25,
        metadata=_key(v.port, "Port used at MX hosts (25 on the internet; others for tests)"),
    )
    tls_policy: str = field(
        default="may",
        metadata=_key(
            v.choice("none", "may", "verify"),
            "Outbound TLS: may (opportunistic), verify (required, valid cert), none",
        ),
    )
    tls_policy_domains: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType({}),
        metadata=_key(
            v.domain_map(v.choice("none", "may", "verify"), '"none" | "may" | "verify"'),
            "Outbound TLS mode per destination domain",
        ),
    )
    max_connections_per_destination: int = field(
        default=10,
        metadata=_key(v.positive_int, "Concurrent connections to one destination"),
    )
    connect_timeout: float = field(
        default=30.0,
        metadata=_key(v.duration, "Time allowed to connect to a remote host", to_toml=_DURATION),
    )
    command_timeout: float = field(
        default=300.0,
        metadata=_key(v.duration, "Time allowed for each remote reply", to_toml=_DURATION),
    )
    connection_reuse_time: float = field(
        default=5.0,
        metadata=_key(
            v.duration, "How long an idle outbound connection is kept for reuse", to_toml=_DURATION
        ),
    )


@dataclass(frozen=True, slots=True)
class AuthConfig:
    user_db: Path = field(
        metadata=_key(
            v.path,
            "SQLite database of mail users and password hashes",
            default_from=_under_data_dir("users.db"),
            default_doc="<data_dir>/users.db",
        )
    )
    lockout_db: Path = field(
        metadata=_key(
            v.path,
            "Counters file shared by the server and `postgate ban` (failed AUTH, bans)",
            default_from=_under_data_dir("counters.db"),
            default_doc="<data_dir>/counters.db",
        )
    )
    mechanisms: tuple[str, ...] = field(
        default=("PLAIN", "LOGIN"),
        metadata=_key(v.names_from(SASL_MECHANISMS), "SASL mechanisms offered after TLS"),
    )
    lockout_max_failures: int = field(
        default=3, metadata=_key(v.positive_int, "Failed AUTH attempts that start a ban")
    )
    lockout_window: float = field(
        default=900.0,
        metadata=_key(v.duration, "Time in which those failures are counted", to_toml=_DURATION),
    )
    lockout_ban_time: float = field(
        default=900.0,
        metadata=_key(v.duration, "How long a ban refuses AUTH", to_toml=_DURATION),
    )
    lockout_penalty_delay: float = field(
        default=1.0,
        metadata=_key(
            v.duration_or_zero, "Delay per failure before a 535 reply", to_toml=_DURATION
        ),
    )
    sender_owners: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: MappingProxyType({}),
        metadata=_key(
            v.sender_owners,
            "Extra addresses or @domains each user may send as",
            to_toml=lambda owners: {user: list(entries) for user, entries in owners.items()},
        ),
    )
    allow_impersonation: tuple[str, ...] = field(
        default=(),
        metadata=_key(
            v.mailboxes,
            "Logins that may act for another user through a SASL authzid",
            to_toml=list,
        ),
    )
    scram_iterations: int = field(
        default=4096,
        metadata=_key(v.scram_iterations, "PBKDF2 rounds for new SCRAM-SHA-256 secrets"),
    )
    credential_cache_ttl: float = field(
        default=60.0,
        metadata=_key(
            v.duration_or_zero,
            "How long a verified PLAIN/LOGIN password is remembered; 0 turns it off",
            to_toml=_DURATION,
        ),
    )
    oauth_jwks: str | None = field(
        default=None,
        metadata=_key(v.text, "Issuer public keys for XOAUTH2/OAUTHBEARER: file or https URL"),
    )
    oauth_audience: str | None = field(
        default=None, metadata=_key(v.text, "Required 'aud' of bearer tokens")
    )
    oauth_issuer: str | None = field(
        default=None, metadata=_key(v.text, "Required 'iss' of bearer tokens (unset: any)")
    )
    oauth_user_claim: str = field(
        default="email",
        metadata=_key(v.choice("email", "sub"), "Token claim that names the user"),
    )
    oauth_scope: str | None = field(
        default=None, metadata=_key(v.text, "Scope named in the RFC 7628 error reply")
    )


@dataclass(frozen=True, slots=True)
class DkimConfig:
    key_dir: Path = field(
        metadata=_key(
            v.path,
            "Private DKIM keys and their rotation state",
            default_from=_under_data_dir("dkim"),
            default_doc="<data_dir>/dkim",
        )
    )
    sign: bool = field(
        default=True,
        metadata=_key(v.boolean, "Sign mail from users and trusted networks when keys exist"),
    )
    algorithms: tuple[str, ...] = field(
        default=("RSA", "ED25519"),
        metadata=_key(
            v.names_from(("RSA", "ED25519")), "Key types keygen and rotation make", to_toml=list
        ),
    )
    rotation_interval: float = field(
        default=7_776_000.0,
        metadata=_key(
            v.duration_or_zero,
            "Age of the signing key that starts a rotation (0: never)",
            to_toml=_DURATION,
        ),
    )
    overlap: float = field(
        default=604_800.0,
        metadata=_key(v.duration, "How long a replaced key stays published", to_toml=_DURATION),
    )
    check_interval: float = field(
        default=3600.0,
        metadata=_key(
            v.duration, "How often DNS is checked to advance key rotation", to_toml=_DURATION
        ),
    )


@dataclass(frozen=True, slots=True)
class MailauthConfig:
    enabled: bool = field(
        default=True,
        metadata=_key(v.boolean, "Check SPF, DKIM, DMARC and ARC on mail from the internet"),
    )
    authserv_id: str | None = field(
        default=None,
        metadata=_key(v.hostname, "Name in Authentication-Results (unset: server.hostname)"),
    )
    spf: bool = field(default=True, metadata=_key(v.boolean, "Check SPF (RFC 7208)"))
    dkim: bool = field(default=True, metadata=_key(v.boolean, "Verify DKIM signatures"))
    dmarc: bool = field(default=True, metadata=_key(v.boolean, "Evaluate DMARC"))
    arc: bool = field(default=True, metadata=_key(v.boolean, "Validate ARC chains"))
    dmarc_enforcement: str = field(
        default="quarantine",
        metadata=_key(v.choice("reject", "quarantine", "record"), "What a DMARC failure leads to"),
    )
    tempfail_on_dns_error: bool = field(
        default=True,
        metadata=_key(v.boolean, "451 instead of guessing when DNS fails"),
    )
    spf_reject_fail: bool = field(
        default=False, metadata=_key(v.boolean, "Reject SPF fail outright (550 5.7.23)")
    )
    lookup_timeout: float = field(
        default=5.0,
        metadata=_key(v.duration, "Time allowed for each DNS query", to_toml=_DURATION),
    )
    arc_seal: bool = field(
        default=True,
        metadata=_key(v.boolean, "ARC-seal mail that an alias forwards to another domain"),
    )


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = field(
        default="info",
        metadata=_key(v.choice("debug", "info", "warning", "error"), "Least severe level logged"),
    )
    format: str = field(
        default="json", metadata=_key(v.choice("json", "text"), "json or text log lines")
    )
    file: Path | None = field(
        default=None, metadata=_key(v.path, "Log file; unset means standard error")
    )


@dataclass(frozen=True, slots=True)
class Config:
    hostname: str
    data_dir: Path
    listeners: tuple[ListenerConfig, ...]
    tls: TlsConfig | None
    limits: LimitsConfig
    routing: RoutingConfig
    queue: QueueConfig
    delivery: DeliveryConfig
    auth: AuthConfig
    log: LogConfig
    source: Path | None
    dkim: DkimConfig | None = None  # None only in hand-built configs; the parser fills it
    mailauth: MailauthConfig = field(default_factory=MailauthConfig)
    workers: int = 1


@dataclass(frozen=True, slots=True)
class Section:
    """One TOML section: ``[name]`` or, if ``array``, ``[[name]]``. ``optional``
    sections become None on Config when absent (only [tls])."""

    name: str
    keys: type[Any]
    array: bool = False
    optional: bool = False


SECTIONS: tuple[Section, ...] = (
    Section("server", ServerSection),
    Section("listener", ListenerConfig, array=True),
    Section("tls", TlsConfig, optional=True),
    Section("limits", LimitsConfig),
    Section("routing", RoutingConfig),
    Section("queue", QueueConfig),
    Section("delivery", DeliveryConfig),
    Section("auth", AuthConfig),
    Section("dkim", DkimConfig),
    Section("mailauth", MailauthConfig),
    Section("log", LogConfig),
)

DEFAULT_LISTENERS = tuple(
    ListenerConfig(role.value, role, "0.0.0.0", role.default_port) for role in ListenerRole
)
