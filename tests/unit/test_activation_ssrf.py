"""SSRF: webhooks never reach private, loopback, link-local or metadata addresses unless the
allow-list admits them; the check runs when connecting, on the address actually used."""

from __future__ import annotations

import ipaddress

import httpx
import pytest
from activation_support import receiver

from huaxiang.activation.ssrf import AddressPolicy, guarded_client, url_problems, why_blocked
from huaxiang.errors import ConfigError

NO_ALLOW = AddressPolicy.from_settings(())
LOOPBACK_ALLOWED = AddressPolicy.from_settings(["127.0.0.1/32"])


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.0.10", "private"),
        ("172.16.5.4", "private"),
        ("169.254.169.254", "metadata"),
        ("169.254.10.1", "link-local"),
        ("fd00:ec2::254", "metadata"),
        ("100.100.100.200", "metadata"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("100.64.0.1", "public"),
        ("fe80::1", "link-local"),
    ],
)
def test_non_public_addresses_are_blocked(address: str, reason: str) -> None:
    found = why_blocked(ipaddress.ip_address(address))
    assert found is not None and reason in found


def test_public_addresses_pass() -> None:
    assert why_blocked(ipaddress.ip_address("93.184.216.34")) is None
    assert why_blocked(ipaddress.ip_address("2606:4700::1111")) is None


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://10.0.0.5/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:9000/hook",
        "http://localhost:9000/hook",
        "https://[fd00:ec2::254]/",
    ],
)
def test_creation_refuses_literal_private_addresses_and_localhost(url: str) -> None:
    problems = url_problems(url, NO_ALLOW)
    assert problems and "refused to connect" in problems[0].message
    assert "[activation] allow" in problems[0].message


def test_creation_checks_scheme_and_user_info() -> None:
    assert "scheme 'ftp'" in url_problems("ftp://example.com/x", NO_ALLOW)[0].message
    assert "scheme 'file'" in url_problems("file:///etc/passwd", NO_ALLOW)[0].message
    assert "user name" in url_problems("https://u:p@example.com/x", NO_ALLOW)[0].message
    assert url_problems("https://hooks.example.com/x", NO_ALLOW) == []
    assert url_problems("http://127.0.0.1:8080/hook", LOOPBACK_ALLOWED) == []


def test_allow_list_entries_must_be_cidrs_or_host_names() -> None:
    with pytest.raises(ConfigError, match="neither CIDRs nor host names"):
        AddressPolicy.from_settings(["10.0.0.0/33"])


def test_connect_time_refuses_loopback_without_the_allow_list() -> None:
    with receiver() as hook, guarded_client(NO_ALLOW) as client:
        for url in (hook.url, hook.url.replace("127.0.0.1", "localhost")):
            with pytest.raises(httpx.ConnectError, match="refused to connect"):
                client.post(url + "/x", content=b"{}")
        assert hook.requests == []


def test_connect_time_refuses_ipv6_loopback() -> None:
    with guarded_client(NO_ALLOW) as client, pytest.raises(httpx.ConnectError, match="loopback"):
        client.post("http://[::1]:9/x", content=b"{}")


def test_allow_list_admits_the_receiver() -> None:
    with receiver() as hook, guarded_client(LOOPBACK_ALLOWED) as client:
        assert client.post(hook.url + "/ok", content=b"{}").status_code == 200
        assert len(hook.at("/ok")) == 1


def test_a_name_resolving_to_a_blocked_address_is_refused() -> None:
    # A host name whose DNS answer is private (or metadata) is refused by its address.
    def resolver(host: str, port: int) -> list[str]:
        return {"internal.example": ["10.0.0.7"], "meta.example": ["169.254.169.254"]}[host]

    with guarded_client(NO_ALLOW, resolver=resolver) as client:
        with pytest.raises(httpx.ConnectError, match=r"10\.0\.0\.7.*private"):
            client.post("http://internal.example/x", content=b"{}")
        with pytest.raises(httpx.ConnectError, match="metadata"):
            client.post("http://meta.example/x", content=b"{}")


def test_connects_to_the_checked_address_and_keeps_the_host_name() -> None:
    # The client connects to the address it checked (no second lookup that DNS rebinding could
    # answer differently) while the Host header still names the host.
    lookups: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"]

    with receiver() as hook, guarded_client(LOOPBACK_ALLOWED, resolver=resolver) as client:
        port = hook.url.rsplit(":", 1)[1]
        answer = client.post(f"http://hooks.example:{port}/named", content=b"{}")
        assert answer.status_code == 200
        (request,) = hook.at("/named")
        assert request.headers["host"] == f"hooks.example:{port}"
        assert lookups == ["hooks.example"]


def test_redirects_are_not_followed() -> None:
    with receiver() as hook, guarded_client(LOOPBACK_ALLOWED) as client:
        hook.answer_with((302, 0, {"location": hook.url + "/elsewhere"}))
        answer = client.post(hook.url + "/start", content=b"{}")
        assert answer.status_code == 302
        assert hook.at("/elsewhere") == []


def test_proxy_settings_in_the_environment_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://10.9.9.9:3128")
    monkeypatch.setenv("ALL_PROXY", "http://10.9.9.9:3128")
    with receiver() as hook, guarded_client(LOOPBACK_ALLOWED) as client:
        assert client.post(hook.url + "/direct", content=b"{}").status_code == 200
