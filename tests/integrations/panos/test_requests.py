"""The exact requests PanosFirewall sends and how it reads PAN-OS XML (respx, no simulator).

Response bodies are the forms in tests/vendor_specs/panos.xml-api.md §2-§4.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from urllib.parse import parse_qs

import httpx
import pytest
import respx

from integrations.errors import (
    AuthError,
    IntegrationError,
    NotFoundError,
    RejectedError,
    TransientError,
    VendorUnavailable,
)
from integrations.panos import PanosFirewall, connect

from .conftest import key_settings, login_settings

BASE = "https://fw.example.invalid"
KEY = "LUFRPT1EXAMPLEKEYc2FtcGxl=="
IP = "203.0.113.7"
SUCCESS_UID = (
    '<response status="success"><result><uid-response><version>2.0</version>'
    "<payload><register/><unregister/></payload></uid-response></result></response>"
)
BAD_KEY = (
    '<response status="error" code="403"><result><msg>Invalid Credential</msg></result></response>'
)


def xml(body: str) -> httpx.Response:
    return httpx.Response(200, text=body, headers={"Content-Type": "application/xml"})


def uid_error(action: str, *messages: str) -> str:
    """The documented user-id error carrying per-entry messages (§4)."""
    entries = "".join(f'<entry ip="{IP}" message="{m}"/>' for m in messages)
    return (
        '<response status="error"><msg><line><uid-response><version>2.0</version>'
        f"<payload><{action}>{entries}</{action}></payload></uid-response></line></msg></response>"
    )


def form(request: httpx.Request) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(request.content.decode()).items()}


def cmd(request: httpx.Request) -> ET.Element:
    """The ``cmd`` XML the adapter sent."""
    return ET.fromstring(form(request)["cmd"])  # noqa: S314 - the adapter's own XML


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        yield mock


@pytest.fixture
async def firewall() -> AsyncIterator[PanosFirewall]:
    async with connect(key_settings(base_url=BASE, api_key=KEY)) as http:
        yield PanosFirewall(http)


async def test_block_posts_uid_message_with_key_in_header_only(
    router: respx.MockRouter, firewall: PanosFirewall
) -> None:
    """Given a fixed key, When blocking for an hour, Then one POST /api/ carries X-PAN-KEY,
    a form body type=user-id & cmd=<uid-message> registering the IP with the tag and
    timeout="3600", and the URL has no query at all (§1, §4)."""
    route = router.post("/api/").mock(return_value=xml(SUCCESS_UID))

    receipt = await firewall.block_ip(IP, ttl_seconds=3600, reason="case 123")

    assert receipt.changed is True
    sent = route.calls.last.request
    assert sent.headers["X-PAN-KEY"] == KEY
    assert sent.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert sent.url.query == b""
    assert KEY not in str(sent.url)
    body = form(sent)
    assert set(body) == {"type", "cmd"}
    assert body["type"] == "user-id"
    message = cmd(sent)
    assert message.tag == "uid-message"
    assert message.findtext("version") == "2.0"
    assert message.findtext("type") == "update"
    [entry] = message.findall("./payload/register/entry")
    assert entry.get("ip") == IP
    [member] = entry.findall("./tag/member")
    assert (member.text, member.get("timeout")) == ("stanch-block", "3600")
    assert message.find("./payload/unregister") is None


@pytest.mark.parametrize("ttl", [None, 0])
async def test_block_without_ttl_sends_no_timeout(
    router: respx.MockRouter, firewall: PanosFirewall, ttl: int | None
) -> None:
    """Given no TTL, When blocking, Then the tag member has no timeout attribute."""
    route = router.post("/api/").mock(return_value=xml(SUCCESS_UID))

    await firewall.block_ip(IP, ttl_seconds=ttl, reason="r")

    member = cmd(route.calls.last.request).find(".//member")
    assert member is not None
    assert "timeout" not in member.attrib


async def test_unblock_posts_unregister(router: respx.MockRouter, firewall: PanosFirewall) -> None:
    """Given a tagged IP, When unblocking, Then the uid-message unregisters the tag (§4)."""
    route = router.post("/api/").mock(return_value=xml(SUCCESS_UID))

    assert (await firewall.unblock_ip(IP)).changed is True

    message = cmd(route.calls.last.request)
    [entry] = message.findall("./payload/unregister/entry")
    assert entry.get("ip") == IP
    assert [m.text for m in entry.findall("./tag/member")] == ["stanch-block"]
    assert message.find("./payload/register") is None


async def test_list_sends_documented_op_and_reads_entries(
    router: respx.MockRouter, firewall: PanosFirewall
) -> None:
    """Given the documented registered-ip answer, When listing, Then the op command names
    the tag, limit 500, start-point 1, and each entry[@ip] with the tag is returned (§4)."""
    route = router.post("/api/").mock(
        return_value=xml(
            '<response status="success"><result>'
            f'<entry ip="{IP}" from_agent="0" persistent="1"><tag><member>stanch-block</member>'
            "</tag></entry>"
            '<entry ip="2001:db8::7"><tag><member>x</member><member>stanch-block</member></tag>'
            "</entry></result></response>"
        )
    )

    blocked = await firewall.list_blocked()

    assert [b.ip for b in blocked] == [IP, "2001:db8::7"]
    body = form(route.calls.last.request)
    assert body["type"] == "op"
    show = cmd(route.calls.last.request)
    assert show.tag == "show"
    registered = show.find("./object/registered-ip")
    assert registered is not None
    assert registered.find("./tag/entry[@name='stanch-block']") is not None
    assert (registered.findtext("limit"), registered.findtext("start-point")) == ("500", "1")


async def test_keygen_posts_credentials_in_body(router: respx.MockRouter) -> None:
    """Given credentials, When the first call is made, Then keygen is POSTed with user and
    password in the form body (never the URL) and the key from ./result/key is then sent
    as X-PAN-KEY (§3)."""
    route = router.post("/api/").mock(
        side_effect=[
            xml(f'<response status="success"><result><key>{KEY}</key></result></response>'),
            xml(SUCCESS_UID),
        ]
    )
    settings = login_settings(base_url=BASE, username="soar-api", password="pw&1")
    async with connect(settings) as http:
        await PanosFirewall(http).block_ip(IP, ttl_seconds=60, reason="r")

    keygen, register = (call.request for call in route.calls)
    assert form(keygen) == {"type": "keygen", "user": "soar-api", "password": "pw&1"}
    assert keygen.url.query == b""
    assert "X-PAN-KEY" not in keygen.headers
    assert register.headers["X-PAN-KEY"] == KEY


async def test_duplicate_register_is_unchanged(
    router: respx.MockRouter, firewall: PanosFirewall
) -> None:
    """Given "tag … already exists, ignore" in a status=error body, When blocking, Then
    success with changed=False (§4: treat as success)."""
    router.post("/api/").mock(
        return_value=xml(uid_error("register", "tag stanch-block already exists, ignore"))
    )
    assert (await firewall.block_ip(IP, ttl_seconds=60, reason="r")).changed is False


async def test_absent_unregister_is_unchanged(
    router: respx.MockRouter, firewall: PanosFirewall
) -> None:
    """Given "ip … does not exist, ignore unreg", When unblocking, Then changed=False."""
    router.post("/api/").mock(
        return_value=xml(uid_error("unregister", f"ip {IP} does not exist, ignore unreg"))
    )
    assert (await firewall.unblock_ip(IP)).changed is False


@pytest.mark.parametrize(
    "messages",
    [
        ("Failed to register",),
        ("Delete mapping failed",),
        ("tag stanch-block already exists, ignore", "Failed to register"),
        ("ip 203.0.113.7 does not exist, ignore unreg",),  # the wrong suffix for a register
    ],
)
async def test_other_register_errors_are_rejected(
    router: respx.MockRouter, firewall: PanosFirewall, messages: tuple[str, ...]
) -> None:
    """Given a user-id error whose entries are not all "already exists, ignore", When
    blocking, Then RejectedError carrying the device's words."""
    router.post("/api/").mock(return_value=xml(uid_error("register", *messages)))

    with pytest.raises(RejectedError) as caught:
        await firewall.block_ip(IP, ttl_seconds=60, reason="r")
    assert messages[-1] in str(caught.value)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("403", AuthError),
        ("16", AuthError),
        ("400", RejectedError),
        ("1", RejectedError),
        ("6", RejectedError),
        ("7", NotFoundError),
        ("13", NotFoundError),
        ("10", RejectedError),
        ("12", RejectedError),
        ("15", RejectedError),
        ("17", RejectedError),
        ("18", RejectedError),
        ("2", VendorUnavailable),
        ("5", VendorUnavailable),
        ("11", VendorUnavailable),
        ("14", VendorUnavailable),
        ("21", VendorUnavailable),
    ],
)
@pytest.mark.parametrize("verb", ["block", "list"])
async def test_error_codes_in_200_map_per_the_table(
    router: respx.MockRouter,
    firewall: PanosFirewall,
    code: str,
    expected: type[IntegrationError],
    verb: str,
) -> None:
    """Given HTTP 200 with status="error" and a code from the §2 table, When blocking or
    listing, Then the error type follows the code: credentials/rights -> AuthError,
    internal or "not possible now" -> VendorUnavailable (transient), object absent ->
    NotFoundError, a request the device refuses -> RejectedError (permanent)."""
    router.post("/api/").mock(
        return_value=xml(
            f'<response status="error" code="{code}"><msg><line>boom</line></msg></response>'
        )
    )

    with pytest.raises(expected) as caught:
        if verb == "block":
            await firewall.block_ip(IP, ttl_seconds=60, reason="r")
        else:
            await firewall.list_blocked()
    assert caught.value.vendor_code == code
    assert "boom" in str(caught.value)
    assert isinstance(caught.value, TransientError) == (expected is VendorUnavailable)


async def test_documented_bad_key_answer_is_auth(
    router: respx.MockRouter, firewall: PanosFirewall
) -> None:
    """Given the documented bad-key body (§4) on HTTP 200, When blocking, Then AuthError
    with the message "Invalid Credential"."""
    router.post("/api/").mock(return_value=xml(BAD_KEY))
    with pytest.raises(AuthError, match="Invalid Credential"):
        await firewall.block_ip(IP, ttl_seconds=60, reason="r")


async def test_bad_key_on_http_403_is_auth(
    router: respx.MockRouter, firewall: PanosFirewall
) -> None:
    """Given the same body on HTTP 403 (some releases), When listing, Then AuthError."""
    router.post("/api/").mock(return_value=httpx.Response(403, text=BAD_KEY))
    with pytest.raises(AuthError) as caught:
        await firewall.list_blocked()
    assert caught.value.vendor_code == "403"


async def test_non_xml_200_is_not_success(
    router: respx.MockRouter, firewall: PanosFirewall
) -> None:
    """Given a 200 that is not PAN-OS XML (a proxy page), When blocking, Then an error."""
    router.post("/api/").mock(return_value=httpx.Response(200, text="<html><body>hi"))
    with pytest.raises(VendorUnavailable):
        await firewall.block_ip(IP, ttl_seconds=60, reason="r")
