"""Where webhooks may go: outbound addresses checked when connecting (SSRF protection).

A destination URL names a host; what counts is the address the connection goes to. The HTTP
client's network backend resolves the host itself, refuses private, loopback, link-local,
multicast, reserved, unspecified, shared (CGNAT) and cloud metadata addresses unless the
workspace allow-list (``[activation] allow``: CIDRs or host names) admits them, and connects to
the address it checked, so a DNS answer that changes between check and connect (rebinding)
cannot swap it. TLS still verifies the certificate against the host name (SNI), and the Host
header keeps the name. Environment proxies are ignored (a proxy would connect for us, unchecked).
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

from huaxiang.errors import ConfigError, Problem

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Cloud instance metadata services (AWS, GCP, Azure, OpenStack; AWS IPv6; Alibaba Cloud).
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),
        ipaddress.ip_address("fd00:ec2::254"),
        ipaddress.ip_address("100.100.100.200"),
    }
)

Resolver = Callable[[str, int], Sequence[str]]


class BlockedAddress(httpcore.ConnectError):
    """The destination resolves to an address webhooks may not reach."""


def _resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in seen:
            seen.append(address)
    return seen


def why_blocked(address: IPAddress) -> str | None:
    """Why webhooks may not connect to ``address`` (None: a public address)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return why_blocked(address.ipv4_mapped)
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    for flag, what in (
        ("is_unspecified", "an unspecified address"),
        ("is_loopback", "a loopback address"),
        ("is_link_local", "a link-local address"),
        ("is_multicast", "a multicast address"),
        ("is_private", "a private address"),
        ("is_reserved", "a reserved address"),
    ):
        if getattr(address, flag):
            return what
    if not address.is_global:
        return "not a public address"
    return None


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """The allow-list: networks and host names admitted although not public."""

    networks: tuple[IPNetwork, ...] = ()
    hosts: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, allow: Iterable[str]) -> AddressPolicy:
        """Parse ``[activation] allow`` entries: CIDRs (or single addresses) and host names."""
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        bad: list[str] = []
        for entry in allow:
            text = entry.strip()
            if not text:
                continue
            try:
                networks.append(ipaddress.ip_network(text.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            if "/" in text or ":" in text or " " in text:
                bad.append(text)
            else:
                hosts.add(text.lower().rstrip("."))
        if bad:
            raise ConfigError(
                f"[activation] allow has entries that are neither CIDRs nor host names: {bad}",
                hint='write e.g. allow = ["127.0.0.1/32", "10.0.0.0/8", "hooks.internal"]',
            )
        return cls(tuple(networks), frozenset(hosts))

    def check(self, host: str, address: IPAddress) -> str | None:
        """Why ``host`` at ``address`` is refused, or None when it may be reached."""
        if any(address in network for network in self.networks):
            return None
        reason = why_blocked(address)
        if reason is None:
            return None
        if host.lower().rstrip(".") in self.hosts and address not in METADATA_ADDRESSES:
            return None
        return reason

    def refusal(self, host: str, address: IPAddress, reason: str) -> str:
        return (
            f"refused to connect to {host} ({address}): {reason}; add it to [activation] allow "
            "in huaxiang.toml if this destination is meant to be reached"
        )


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def url_problems(url: str, policy: AddressPolicy) -> list[Problem]:
    """Problems of a destination URL seen without connecting: scheme, user info, literal
    addresses and local names (the connect-time check still runs on every delivery)."""
    where = "url"
    try:
        parts = urlsplit(url)
        _ = parts.port  # a bad port raises here
    except ValueError as e:
        return [
            Problem(where, f"{url!r} is not a URL: {e}", hint="e.g. https://hooks.example.com/x")
        ]
    problems: list[Problem] = []
    if parts.scheme not in ("http", "https"):
        problems.append(
            Problem(where, f"scheme {parts.scheme or '(none)'!r} is not allowed", hint="use https")
        )
    if parts.username is not None or parts.password is not None:
        problems.append(
            Problem(
                where,
                "user name or password in the URL is not allowed",
                hint="the signature authenticates messages; put a token in the path if needed",
            )
        )
    host = parts.hostname or ""
    if not host:
        problems.append(
            Problem(where, "the URL has no host", hint="e.g. https://hooks.example.com/x")
        )
        return problems
    if parts.fragment:
        problems.append(Problem(where, "a #fragment is never sent", hint="remove it"))
    address = _literal(host)
    if address is not None:
        reason = policy.check(host, address)
        if reason is not None:
            problems.append(Problem(where, policy.refusal(host, address, reason)))
    elif host.lower().rstrip(".") == "localhost" or host.lower().endswith(".localhost"):
        reason = policy.check(host, ipaddress.ip_address("127.0.0.1"))
        if reason is not None:
            problems.append(
                Problem(where, policy.refusal(host, ipaddress.ip_address("127.0.0.1"), reason))
            )
    return problems


class GuardedBackend(httpcore.SyncBackend):
    """httpcore's socket backend, resolving and checking the host before connecting by address."""

    def __init__(self, policy: AddressPolicy, resolver: Resolver | None = None) -> None:
        self.policy = policy
        self.resolver: Resolver = resolver or _resolve

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            addresses = list(self.resolver(host, port))
        except OSError as e:
            raise httpcore.ConnectError(f"cannot resolve {host}: {e}") from e
        if not addresses:
            raise httpcore.ConnectError(f"cannot resolve {host}: no address")
        refusals: list[str] = []
        last_error: Exception | None = None
        for text in addresses:
            address = ipaddress.ip_address(text.split("%", 1)[0])
            reason = self.policy.check(host, address)
            if reason is not None:
                refusals.append(self.policy.refusal(host, address, reason))
                continue
            try:
                return super().connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as e:
                last_error = e
        if last_error is not None:
            raise last_error
        raise BlockedAddress("; ".join(refusals))


def guarded_client(
    policy: AddressPolicy, *, resolver: Resolver | None = None, max_connections: int = 20
) -> httpx.Client:
    """An httpx client that only connects to addresses the policy admits, never follows redirects
    and ignores proxy settings from the environment."""
    transport = httpx.HTTPTransport(trust_env=False)
    # Replace the transport's pool by one whose network backend is guarded (httpx does not
    # expose the backend); same TLS defaults as httpx.
    transport._pool = httpcore.ConnectionPool(
        ssl_context=ssl.create_default_context(),
        max_connections=max_connections,
        max_keepalive_connections=max_connections,
        keepalive_expiry=5.0,
        network_backend=GuardedBackend(policy, resolver),
    )
    return httpx.Client(transport=transport, follow_redirects=False, trust_env=False)


def is_blocked_error(error: BaseException) -> bool:
    """True when a connect error came from the address policy (not from the network)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, BlockedAddress) or "refused to connect to" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
