"""Fetching an image by URL (``image_url``, ``bg_image_url``) without server-side request forgery.

Only http and https. The host is resolved once with ``getaddrinfo`` and EVERY address it gives is
checked (so ``127.1``, ``2130706433``, ``0.0.0.0``, ``localhost`` and IPv4-mapped IPv6 are seen as
what they are); the connection goes to the checked address (no second lookup an attacker's DNS
could answer differently), with the URL's host name kept for ``Host`` and TLS. Each redirect is
checked the same way (at most ``MAX_REDIRECTS``); size and time are capped. Framework-free.

``allowed`` is a set of ``(address, port)`` pairs exempt from the address check: off by default,
for tests against a loopback server or an internal image host you trust.
"""
import concurrent.futures
import http.client
import ipaddress
import socket
import ssl
import time
import urllib.parse

from .errors import ImageTooLarge, UrlFetchFailed, UrlNotAllowed

MAX_REDIRECTS = 3
REDIRECTS = (301, 302, 303, 307, 308)
CHUNK = 64 * 1024
SCHEMES = {"http": 80, "https": 443}
# NAT64's well-known prefix carries an IPv4 address in its last 32 bits.
NAT64 = ipaddress.ip_network("64:ff9b::/96")
# getaddrinfo has no timeout: it runs here, and a request stops waiting for it at its deadline.
_RESOLVER = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="resolve")


def unwrap(address):
    """The IPv4 address inside an IPv4-mapped, 6to4, Teredo or NAT64 IPv6 address, else ``address``."""
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address.teredo is not None:
            return address.teredo[1]
        if address in NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def is_public(address):
    """True for a globally routable unicast address: not loopback, private, link-local, multicast or reserved."""
    address = unwrap(ipaddress.ip_address(address))
    return address.is_global and not (address.is_multicast or address.is_reserved or address.is_unspecified)


def parse_allowed(setting):
    """``"127.0.0.1:8080,[::1]:9000"`` as a set of ``(address, port)`` pairs; ValueError on a bad entry."""
    allowed = set()
    for entry in str(setting or "").split(","):
        entry = entry.strip()
        if not entry:
            continue
        host, _, port = entry.rpartition(":")
        allowed.add((str(ipaddress.ip_address(host.strip("[]"))), int(port)))
    return frozenset(allowed)


def check_address(address, port, allowed=frozenset()):
    """Raise UrlNotAllowed unless ``address`` is public or ``(address, port)`` is explicitly allowed."""
    normal = str(ipaddress.ip_address(address))
    if (normal, port) in allowed:
        return
    if not is_public(normal):
        raise UrlNotAllowed("the URL points to a loopback, private, link-local or reserved address")


def resolve(host, port, timeout=10.0):
    """Every address ``host`` resolves to, as strings (``getaddrinfo``, TCP only, waited for at most ``timeout`` s)."""
    try:
        infos = _RESOLVER.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM).result(timeout=max(timeout, 0.001))
    except (socket.gaierror, UnicodeError) as exc:
        raise UrlFetchFailed("the URL's host name could not be resolved") from exc
    except TimeoutError as exc:
        raise UrlFetchFailed(f"resolving the URL's host name took longer than {timeout:g} s") from exc
    return list(dict.fromkeys(info[4][0].split("%", 1)[0] for info in infos))


def open_connection(address, port, timeout):
    """A TCP connection to an address that was already checked (tests replace this to watch it)."""
    return socket.create_connection((address, port), timeout=timeout)


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP to the checked address, with the URL's host name in ``Host``."""

    def __init__(self, host, port, address, timeout):
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self):
        self.sock = open_connection(self.address, self.port, self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to the checked address; the certificate is verified against the URL's host name."""

    def __init__(self, host, port, address, timeout):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self.address = address

    def connect(self):
        sock = open_connection(self.address, self.port, self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def _target(url, allowed, timeout):
    """``(scheme, host, port, address, path)`` for ``url`` after every check, or UrlNotAllowed."""
    try:
        parts = urllib.parse.urlsplit(str(url).strip())
        port = parts.port
    except ValueError as exc:
        raise UrlNotAllowed("the URL is malformed") from exc
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise UrlNotAllowed("only http and https URLs are fetched")
    if parts.username is not None or parts.password is not None:
        raise UrlNotAllowed("URLs with credentials are not fetched")
    host = parts.hostname
    if not host:
        raise UrlNotAllowed("the URL has no host")
    port = port or SCHEMES[scheme]
    addresses = resolve(host, port, timeout)
    if not addresses:
        raise UrlFetchFailed("the URL's host name has no address")
    for address in addresses:
        check_address(address, port, allowed)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return scheme, host, port, addresses[0], path


def fetch(url, max_bytes, timeout=10.0, allowed=frozenset()):
    """The body of ``url`` (at most ``max_bytes``, within ``timeout`` seconds overall), checked at every hop."""
    deadline = time.monotonic() + float(timeout)
    for _ in range(MAX_REDIRECTS + 1):
        scheme, host, port, address, path = _target(url, allowed, deadline - time.monotonic())
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise UrlFetchFailed(f"the download took longer than {timeout:g} s")
        connection_class = _PinnedHTTPSConnection if scheme == "https" else _PinnedHTTPConnection
        connection = connection_class(host, port, address, timeout=remaining)
        try:
            connection.request("GET", path, headers={"User-Agent": "bgremoval", "Accept": "image/*"})
            response = connection.getresponse()
            if response.status in REDIRECTS:
                location = response.getheader("Location")
                if not location:
                    raise UrlFetchFailed(f"HTTP {response.status} without a Location")
                url = urllib.parse.urljoin(url, location)
                continue
            if response.status != 200:
                raise UrlFetchFailed(f"the server answered HTTP {response.status}")
            return _read_capped(response, max_bytes, deadline, timeout)
        except (OSError, http.client.HTTPException) as exc:
            raise UrlFetchFailed(f"the download failed ({type(exc).__name__})") from exc
        finally:
            connection.close()
    raise UrlFetchFailed(f"more than {MAX_REDIRECTS} redirects")


def _read_capped(response, max_bytes, deadline, timeout):
    length = response.getheader("Content-Length")
    if length and length.isdigit() and int(length) > max_bytes:
        raise ImageTooLarge(f"the image at the URL is over {max_bytes / 2**20:.3g} MB")
    chunks, size = [], 0
    while True:
        if time.monotonic() > deadline:
            raise UrlFetchFailed(f"the download took longer than {timeout:g} s")
        block = response.read1(CHUNK)
        if not block:
            break
        size += len(block)
        if size > max_bytes:
            raise ImageTooLarge(f"the image at the URL is over {max_bytes / 2**20:.3g} MB")
        chunks.append(block)
    if not size:
        raise UrlFetchFailed("the URL returned an empty body")
    return b"".join(chunks)
