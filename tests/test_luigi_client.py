"""The pipeline's client for luigid (`pipeline/luigi_client.py`), against a real luigid: Luigi's
calls on one kept-alive connection, a restarted luigid reached without Luigi's retry wait, a
forked worker on its own connection, and requests kept where it treats a URL specially."""

from __future__ import annotations

import os
from collections.abc import Iterator

import luigi.configuration
import pytest
from luigi.rpc import RemoteScheduler, RPCError

import pipeline  # noqa: F401  (installs the fetcher, as `luigi --module pipeline` does)
from devstack.servers import LuigidServer
from pipeline.luigi_client import KeepAliveFetcher, is_direct


@pytest.fixture
def one_attempt() -> Iterator[None]:
    """Luigi's RPC retry off: a call that needed it fails instead of waiting 30 s."""
    config = luigi.configuration.get_config()
    config.set("core", "rpc_retry_attempts", "1")
    yield
    config.remove_option("core", "rpc_retry_attempts")


def local_port(remote: RemoteScheduler) -> int:
    fetcher = remote._fetcher
    assert isinstance(fetcher, KeepAliveFetcher)
    return fetcher._local.connection.sock.getsockname()[1]


def test_calls_go_through_one_kept_alive_connection(luigid, one_attempt) -> None:
    remote = RemoteScheduler(luigid.url)
    remote.add_task(worker="w", task_id="Count_1", family="Count", status="PENDING")
    port = local_port(remote)
    assert list(remote.task_list("PENDING", "")) == ["Count_1"]
    assert local_port(remote) == port
    with pytest.raises(RPCError):  # an HTTP error (luigid has no such method) is an RPC error
        remote._request("/api/no_such_method", {})
    assert "rpc_messages" in remote.ping(worker="w")  # and the next call still works


def test_a_restarted_luigid_is_reached_at_once(tmp_path, one_attempt) -> None:
    with LuigidServer(tmp_path / "first") as first:
        remote = RemoteScheduler(first.url)
        remote.ping(worker="w")
        before = local_port(remote)
    with LuigidServer(tmp_path / "second", port=first.port):
        # The connection the first luigid closed is replaced at once, not retried in 30 s.
        assert "rpc_messages" in remote.ping(worker="w")
        assert local_port(remote) != before


def test_a_forked_worker_uses_its_own_connection(luigid, one_attempt) -> None:
    remote = RemoteScheduler(luigid.url)
    remote.ping(worker="parent")
    parent_port = local_port(remote)
    child = os.fork()
    if child == 0:  # Luigi's worker processes are forked with the scheduler object
        try:
            remote.ping(worker="child")
            os._exit(0 if local_port(remote) != parent_port else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert "rpc_messages" in remote.ping(worker="parent")
    assert local_port(remote) == parent_port


@pytest.fixture
def fresh_environment_answers() -> Iterator[None]:
    is_direct.cache_clear()
    yield
    is_direct.cache_clear()


def test_urls_requests_treats_specially_stay_with_requests(
    monkeypatch, fresh_environment_answers
) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", "/nonexistent")  # no ~/.netrc
    assert is_direct("http://10.1.2.3:8082/api/ping")
    assert not is_direct("https://luigid.example/api/ping")
    assert not is_direct("http://me:secret@luigid.example/api/ping")

    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    is_direct.cache_clear()
    assert not is_direct("http://10.1.2.3:8082/api/ping")
    monkeypatch.setenv("NO_PROXY", "10.1.2.3")
    is_direct.cache_clear()
    assert is_direct("http://10.1.2.3:8082/api/ping")
