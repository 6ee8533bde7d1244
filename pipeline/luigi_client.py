"""Luigi's client for luigid, on one kept-alive HTTP connection per thread.

Luigi's `RemoteScheduler` sends every call (`add_task`, `get_work`, the progress reports)
through a requests Session, which for each request reads the environment's proxy variables,
looks for `~/.netrc` and builds its request and response objects: 1.22 ms a round trip to a
luigid on loopback, against 0.35 ms for the same request on a kept-alive `http.client`
connection (`ping`, measured on the 2-core development machine). A year's backfill makes about
1,900 of them: its luigid round trips took 4.6 s, and 3.1 s on kept-alive connections
(`scripts/bench_backfill.py --stages`).

`KeepAliveFetcher` answers plain `http://` calls itself, after asking requests once per URL
whether it would go through a proxy or send `.netrc` credentials; anything else (https,
`http+unix://`, credentials in the URL, a proxy) goes through requests as before. Errors are
raised as the types Luigi's retry loop expects, so `[core] rpc-retry-*` behave the same.
`pipeline/__init__.py` installs it for every `RemoteScheduler` made after the import.
"""

from __future__ import annotations

import http.client
import os
import threading
from functools import cache
from urllib.parse import urlencode, urlsplit

import luigi.rpc
import requests
import requests.utils

FORM = {"Content-Type": "application/x-www-form-urlencoded"}

# A kept-alive connection luigid has closed (a restart, an idle timeout) fails at its next use
# in one of these ways before luigid has read the request: it is sent once more on a new one.
STALE_CONNECTION = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class KeepAliveFetcher(luigi.rpc.RequestsFetcher):
    """`luigi.rpc.RequestsFetcher` with direct `http://` calls on kept-alive connections."""

    def __init__(self) -> None:
        super().__init__()
        self.raises = (requests.RequestException, OSError, http.client.HTTPException)
        self._local = threading.local()  # Luigi pings from a thread of its own

    def fetch(self, full_url: str, body: dict, timeout: float) -> str:
        if not is_direct(full_url):
            return super().fetch(full_url, body, timeout)
        url = urlsplit(full_url)
        payload = urlencode(body)
        connection, reused = self._connection(url.netloc, timeout)
        try:
            response, text = _post(connection, url.path, payload)
        except STALE_CONNECTION:
            if not reused:
                raise
            response, text = _post(connection, url.path, payload)
        if response.status >= 400:
            raise requests.HTTPError(f"{response.status} {response.reason} for url: {full_url}")
        return text

    def _connection(self, netloc: str, timeout: float) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's connection to `netloc`, and whether it was made for an earlier call.
        A forked worker process makes its own: a socket shared with the parent would mix their
        answers."""
        key = (os.getpid(), netloc, timeout)
        if getattr(self._local, "key", None) == key:
            return self._local.connection, True
        self._local.key = key
        self._local.connection = http.client.HTTPConnection(netloc, timeout=timeout)
        return self._local.connection, False

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
        super().close()


def _post(
    connection: http.client.HTTPConnection, path: str, payload: str
) -> tuple[http.client.HTTPResponse, str]:
    """The response and its text. A call that fails closes the connection: http.client would
    refuse the next request on one left waiting for an answer, and the next call reopens it."""
    try:
        connection.request("POST", path, payload, FORM)
        response = connection.getresponse()
        return response, response.read().decode("utf-8")
    except BaseException:
        connection.close()
        raise


@cache
def is_direct(full_url: str) -> bool:
    """Whether requests would send this URL straight to its host, with no credentials: plain
    http, no user in the URL, no proxy for the host and no `.netrc` entry (asked once per URL,
    as the environment is read once per process)."""
    url = urlsplit(full_url)
    return (
        url.scheme == "http"
        and url.username is None
        and not requests.utils.get_environ_proxies(full_url)
        and requests.utils.get_netrc_auth(full_url) is None
    )
