"""A PAN-OS imitation: keygen, User-ID tag registration with timeouts, registered-IP read-back.

Serves the one documented endpoint, ``/api/`` (reference §1), and the request types a
DAG-blocking adapter uses; every answer, errors included, is HTTP 200 XML.
"""

from __future__ import annotations

import ipaddress
import secrets
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from integrations.simkit import Simulator

LAB_USERNAME = "stanch-lab"
LAB_PASSWORD = "stanch-lab-password"  # noqa: S105 - the simulator's public lab password
LAB_API_KEY = "LUFRPT1zdGFuY2gtbGFiLWtleQ=="
"""The key the simulator accepts and its keygen returns, until :meth:`rotate_key`."""

MAX_TIMEOUT_SECONDS = 2_592_000
ALREADY = "already exists, ignore"
ABSENT = "does not exist, ignore unreg"


def _xml(root: ET.Element, status: int = 200) -> Response:
    return Response(
        ET.tostring(root, encoding="unicode"), status_code=status, media_type="application/xml"
    )


def _error(
    code: str | None, text: str, *, in_result: bool = False, http_status: int = 200
) -> Response:
    """``<response status="error" code=…>`` with the message where PAN-OS puts it."""
    root = ET.Element("response", {"status": "error"})
    if code is not None:
        root.set("code", code)
    parent = ET.SubElement(root, "result") if in_result else root
    msg = ET.SubElement(parent, "msg")
    if in_result:
        msg.text = text
    else:
        ET.SubElement(msg, "line").text = text
    return _xml(root, http_status)


class PanosSimulator(Simulator):
    """Stateful PAN-OS XML API for DAG blocking.

    Args:
        username: admin accepted by keygen.
        password: that admin's password.
        api_key: the key keygen hands out and requests must carry.
        clock: epoch-seconds time source; inject one to make registrations expire on demand.
    """

    vendor = "panos"
    base_url = "https://panos.lab.invalid"

    def __init__(
        self,
        *,
        username: str = LAB_USERNAME,
        password: str = LAB_PASSWORD,
        api_key: str = LAB_API_KEY,
        clock: Callable[[], float] = time.time,
        credential_refusal_status: int = 403,
    ) -> None:
        # [U] The HTTP status of an "Invalid Credential" answer: the error-code page gives
        # code 403 inside the XML, third-party clients see it with HTTP 403 and with 200.
        # 403 by default; 200 is the other reading (tests run the adapter under both).
        self.credential_refusal_status = credential_refusal_status
        self.username = username
        self.password = password
        self.api_key = api_key
        self.clock = clock
        # ip -> tag -> expiry (epoch seconds) or None for no timeout
        self.registered: dict[str, dict[str, float | None]] = {}
        self.request_types: list[str] = []
        super().__init__()

    def throttle_headers(self, wait: float) -> dict[str, str]:
        """[U] PAN-OS documents no rate limit or retry header; a 429 says nothing about when."""
        return {}

    def routes(self) -> list[BaseRoute]:
        """The XML API's single endpoint (reference §1: GET with query or POST form)."""
        return [Route("/api/", self._api, methods=["GET", "POST"])]

    def rotate_key(self) -> str:
        """Invalidate the current key, as generating another key may do [U]; return the new one."""
        self.api_key = "LUFRPT" + secrets.token_urlsafe(18)
        return self.api_key

    # State ----------------------------------------------------------------------------
    def tags_of(self, ip: str) -> dict[str, float | None]:
        """The live (unexpired) tags of ``ip``."""
        now = self.clock()
        tags = self.registered.get(ip, {})
        for tag in [t for t, exp in tags.items() if exp is not None and exp <= now]:
            del tags[tag]
        if not tags:
            self.registered.pop(ip, None)
        return tags

    def registered_with(self, tag: str) -> list[str]:
        """Every IP currently carrying ``tag``, in registration order."""
        return [ip for ip in list(self.registered) if tag in self.tags_of(ip)]

    # Dispatch -------------------------------------------------------------------------
    async def _api(self, request: Request) -> Response:
        params = dict(request.query_params)
        if request.method == "POST":
            params |= dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
        kind = params.get("type", "")
        self.request_types.append(kind)
        if kind == "keygen":
            return self._keygen(params)
        key = request.headers.get("x-pan-key") or params.get("key")
        if key != self.api_key:
            return self._invalid_credential()
        if kind == "user-id":
            return self._user_id(params.get("cmd", ""))
        if kind == "op":
            return self._op(params.get("cmd", ""))
        if kind in ("config", "commit", "export", "import", "report", "log", "version"):
            # Documented request types this simulator does not model.
            return _error("1", f"Unknown command: type={kind} is not simulated")
        return _error("400", "Bad request: missing or illegal parameter 'type'")

    def _keygen(self, params: dict[str, str]) -> Response:
        if params.get("user") != self.username or params.get("password") != self.password:
            return self._invalid_credential()
        root = ET.Element("response", {"status": "success"})
        ET.SubElement(ET.SubElement(root, "result"), "key").text = self.api_key
        return _xml(root)

    def _invalid_credential(self) -> Response:
        return _error(
            "403", "Invalid Credential", in_result=True, http_status=self.credential_refusal_status
        )

    # type=user-id ---------------------------------------------------------------------
    def _user_id(self, cmd: str) -> Response:
        try:
            message = ET.fromstring(cmd)  # noqa: S314 - the adapter under test's own XML
        except ET.ParseError:
            return _error("18", "Malformed command")
        payload = message.find("./payload")
        if message.tag != "uid-message" or payload is None:
            return _error("17", "Invalid command: expected <uid-message> with <payload>")
        parsed = self._entries(payload)
        if isinstance(parsed, Response):
            return parsed
        now = self.clock()
        notes: dict[str, list[tuple[str, str]]] = {"register": [], "unregister": []}
        for action, ip, tag, timeout in parsed:
            tags = self.tags_of(ip)
            if action == "register":
                if tag in tags:
                    notes["register"].append((ip, f"tag {tag} {ALREADY}"))
                else:
                    self.registered.setdefault(ip, {})[tag] = now + timeout if timeout else None
            elif tag in tags:
                del tags[tag]
                self.tags_of(ip)
            elif not tags:
                notes["unregister"].append((ip, f"ip {ip} {ABSENT}"))
            else:
                notes["unregister"].append((ip, f"tag {tag} {ABSENT}"))
        return self._uid_response(notes)

    @staticmethod
    def _entries(payload: ET.Element) -> list[tuple[str, str, str, int]] | Response:
        """``(action, ip, tag, timeout)`` per tag member, or the error for a bad entry."""
        out: list[tuple[str, str, str, int]] = []
        for action in ("register", "unregister"):
            for entry in payload.findall(f"./{action}/entry"):
                try:
                    ip = str(ipaddress.ip_address(entry.get("ip", "")))
                except ValueError:
                    return _error("400", f"Bad request: invalid ip {entry.get('ip')!r}")
                for member in entry.findall("./tag/member"):
                    raw = member.get("timeout", "0")
                    if not raw.isdigit() or int(raw) > MAX_TIMEOUT_SECONDS:
                        return _error("400", f"Bad request: illegal timeout {raw!r}")
                    out.append((action, ip, (member.text or "").strip(), int(raw)))
        return out

    @staticmethod
    def _uid_response(notes: dict[str, list[tuple[str, str]]]) -> Response:
        """Success, or the documented error carrying per-entry "ignore" messages."""
        if not any(notes.values()):
            root = ET.Element("response", {"status": "success"})
            uid = ET.SubElement(ET.SubElement(root, "result"), "uid-response")
            ET.SubElement(uid, "version").text = "2.0"
            payload = ET.SubElement(uid, "payload")
            ET.SubElement(payload, "register")
            ET.SubElement(payload, "unregister")
            return _xml(root)
        root = ET.Element("response", {"status": "error"})
        uid = ET.SubElement(ET.SubElement(ET.SubElement(root, "msg"), "line"), "uid-response")
        ET.SubElement(uid, "version").text = "2.0"
        payload = ET.SubElement(uid, "payload")
        for action, items in notes.items():
            if items:
                block = ET.SubElement(payload, action)
                for ip, text in items:
                    ET.SubElement(block, "entry", {"ip": ip, "message": text})
        return _xml(root)

    # type=op --------------------------------------------------------------------------
    def _op(self, cmd: str) -> Response:
        try:
            command = ET.fromstring(cmd)  # noqa: S314 - the adapter under test's own XML
        except ET.ParseError:
            return _error("18", "Malformed command")
        query = command.find("./object/registered-ip")
        if command.tag != "show" or query is None:
            return _error("17", f"Invalid command: <{command.tag}> is not simulated")
        tag_entry = query.find("./tag/entry")
        tag = tag_entry.get("name") if tag_entry is not None else None
        only_ip = (query.findtext("./ip") or "").strip() or None
        try:
            limit = int(query.findtext("./limit") or 500)
            start = int(query.findtext("./start-point") or 1)
        except ValueError:
            return _error("17", "Invalid command: limit and start-point are numbers")
        if limit < 1 or start < 1:
            return _error("17", "Invalid command: limit and start-point start at 1")
        ips = [
            ip
            for ip in list(self.registered)
            if (tags := self.tags_of(ip))
            and (tag is None or tag in tags)
            and (only_ip is None or ip == only_ip)
        ]
        root = ET.Element("response", {"status": "success"})
        result = ET.SubElement(root, "result")
        for ip in ips[start - 1 : start - 1 + limit]:
            entry = ET.SubElement(result, "entry", {"ip": ip, "from_agent": "0", "persistent": "1"})
            members = ET.SubElement(entry, "tag")
            for name in self.tags_of(ip):
                ET.SubElement(members, "member").text = name
        return _xml(root)
