"""app.urlfetch: the SSRF guard. Traffic goes only to 127.0.0.1 servers started here.

Private and link-local ranges are checked at the address level, and through ``fetch`` with the
connector replaced by one that fails the test if it is ever called: no test connects to them.
Loopback refusals are checked against a real loopback server that counts its hits, so a fetcher
that merely failed (and turned that into an error) could not pass for a guard.
"""
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app import urlfetch
from app.errors import ImageTooLarge, UrlFetchFailed, UrlNotAllowed

PRIVATE = [
    "10.0.0.1", "10.255.255.254", "172.16.0.1", "172.31.255.254", "192.168.0.1", "192.168.255.254",
    "169.254.169.254", "169.254.0.1", "fc00::1", "fd12:3456::1", "fe80::1", "127.0.0.1", "127.255.0.1",
    "::1", "0.0.0.0", "::", "224.0.0.1", "239.255.255.250", "ff02::1", "100.64.0.1", "240.0.0.1",
    "255.255.255.255", "::ffff:10.0.0.1", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "64:ff9b::a00:1",
    "2002:c0a8:1::1", "192.0.2.1", "198.18.0.1",
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2001:4860:4860::8888", "2606:4700:4700::1111", "::ffff:8.8.8.8"]


class Counting(BaseHTTPRequestHandler):
    """``/img``: bytes; ``/to?u=URL``: a 302 to URL; ``/big``: more than the cap. Counts every hit."""

    def do_GET(self):
        self.server.hits.append(self.path)
        if self.path.startswith("/to?u="):
            self.send_response(302)
            self.send_header("Location", self.path[len("/to?u="):])
            self.end_headers()
            return
        body = b"x" * 5000 if self.path == "/big" else b"IMAGE BYTES"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def servers():
    """Two loopback servers, each with a ``hits`` list; stopped afterwards."""
    started = []
    for _ in range(2):
        server = ThreadingHTTPServer(("127.0.0.1", 0), Counting)
        server.hits = []
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
    yield started
    for server in started:
        server.shutdown()
        server.server_close()


@pytest.fixture
def no_connect(monkeypatch):
    """Make any connection attempt fail the test."""

    def refuse(address, port, timeout):
        pytest.fail(f"the fetcher tried to connect to {address}:{port}")

    monkeypatch.setattr(urlfetch, "open_connection", refuse)


def allow(server):
    return frozenset({("127.0.0.1", server.server_address[1])})


@pytest.mark.parametrize("address", PRIVATE)
def test_non_public_addresses_are_refused(address):
    assert not urlfetch.is_public(address)
    with pytest.raises(UrlNotAllowed):
        urlfetch.check_address(address, 80)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass_the_check(address):
    assert urlfetch.is_public(address)
    urlfetch.check_address(address, 80)  # no exception; nothing is fetched


@pytest.mark.parametrize("host", ["10.1.2.3", "172.20.0.5", "192.168.1.10", "169.254.169.254", "[fc00::5]", "[fe80::1]", "[::ffff:192.168.0.1]"])
def test_private_ranges_through_fetch_never_connect(host, no_connect):
    with pytest.raises(UrlNotAllowed):
        urlfetch.fetch(f"http://{host}/latest/meta-data/", max_bytes=1000)


def test_every_resolved_address_is_checked(monkeypatch, no_connect):
    """A name resolving to a public and a private address is refused (DNS answers are not trusted)."""

    def two_answers(host, port, type=0):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in ("93.184.216.34", "10.0.0.7")]

    monkeypatch.setattr(urlfetch.socket, "getaddrinfo", two_answers)
    with pytest.raises(UrlNotAllowed):
        urlfetch.fetch("http://images.example.com/a.jpg", max_bytes=1000)


@pytest.mark.parametrize("spelling", ["127.1", "2130706433", "0.0.0.0", "localhost", "[::1]", "[::ffff:127.0.0.1]", "0x7f000001", "127.000.000.001", "017700000001"])
def test_loopback_in_every_spelling_is_refused_without_a_request(spelling, servers, no_connect):
    server = servers[0]
    with pytest.raises(UrlNotAllowed):
        urlfetch.fetch(f"http://{spelling}:{server.server_address[1]}/img", max_bytes=1000)
    assert server.hits == []


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/a.jpg", "gopher://127.0.0.1:70/", "data:image/png;base64,AAAA", "//example.com/a.jpg", "http://user:pw@example.com/a.jpg", "http:///a.jpg", "http://example.com:99999/"])
def test_other_schemes_and_malformed_urls_are_refused(url, no_connect):
    with pytest.raises(UrlNotAllowed):
        urlfetch.fetch(url, max_bytes=1000)


def test_an_allowed_loopback_server_is_fetched(servers):
    server = servers[0]
    data = urlfetch.fetch(f"http://127.0.0.1:{server.server_address[1]}/img", max_bytes=1000, allowed=allow(server))
    assert data == b"IMAGE BYTES" and server.hits == ["/img"]


def test_the_allowance_is_one_address_and_port(servers):
    first, second = servers
    with pytest.raises(UrlNotAllowed):
        urlfetch.fetch(f"http://127.0.0.1:{second.server_address[1]}/img", max_bytes=1000, allowed=allow(first))
    with pytest.raises(UrlNotAllowed):  # localhost also resolves to ::1 here, which is not allowed
        urlfetch.fetch(f"http://[::1]:{first.server_address[1]}/img", max_bytes=1000, allowed=allow(first))
    assert first.hits == [] and second.hits == []


@pytest.mark.parametrize("target", ["http://127.0.0.1:{other}/img", "http://127.1:{other}/img", "http://[::1]:{other}/img", "file:///etc/passwd", "http://10.0.0.1/img"])
def test_a_redirect_is_checked_again(target, servers):
    first, second = servers
    target = target.format(other=second.server_address[1])
    with pytest.raises(UrlNotAllowed):
        urlfetch.fetch(f"http://127.0.0.1:{first.server_address[1]}/to?u={target}", max_bytes=1000, allowed=allow(first))
    assert first.hits == [f"/to?u={target}"] and second.hits == []


def test_redirects_are_followed_at_most_three_times(servers):
    server = servers[0]
    base = f"http://127.0.0.1:{server.server_address[1]}"
    three = f"{base}/to?u=/to?u=/to?u=/img"
    assert urlfetch.fetch(three, max_bytes=1000, allowed=allow(server)) == b"IMAGE BYTES"
    server.hits.clear()
    with pytest.raises(UrlFetchFailed, match="redirects"):
        urlfetch.fetch(f"{base}/to?u=/to?u=/to?u=/to?u=/img", max_bytes=1000, allowed=allow(server))
    assert len(server.hits) == 4


def test_size_is_capped(servers):
    server = servers[0]
    with pytest.raises(ImageTooLarge):
        urlfetch.fetch(f"http://127.0.0.1:{server.server_address[1]}/big", max_bytes=1000, allowed=allow(server))


def test_a_silent_server_times_out():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(UrlFetchFailed):
            urlfetch.fetch(f"http://127.0.0.1:{port}/img", max_bytes=1000, timeout=0.5, allowed=frozenset({("127.0.0.1", port)}))


def test_parse_allowed():
    assert urlfetch.parse_allowed("127.0.0.1:8080, [::1]:9000") == {("127.0.0.1", 8080), ("::1", 9000)}
    assert urlfetch.parse_allowed("") == frozenset()
    with pytest.raises(ValueError):
        urlfetch.parse_allowed("example.com:80")


def test_a_slow_resolver_is_not_waited_for(monkeypatch, no_connect):
    release = threading.Event()

    def stuck(host, port, type=0):
        release.wait(10)
        raise socket.gaierror("gave up")

    monkeypatch.setattr(urlfetch.socket, "getaddrinfo", stuck)
    try:
        with pytest.raises(UrlFetchFailed, match="resolving"):
            urlfetch.fetch("http://slow-dns.example.com/a.jpg", max_bytes=1000, timeout=0.3)
    finally:
        release.set()
