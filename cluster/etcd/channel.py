"""The gRPC channel to etcd: round robin over every endpoint, and *require a leader*.

A member cut from its peers still accepts connections, but a request that needs the
leader (a lease refresh, a linearizable read, any write) waits there for one it cannot
reach, and a watch opened there silently stops seeing events. etcd fails such a request
at once, with ``UNAVAILABLE: etcdserver: no leader``, only when the client sends the
metadata ``hasleader: true`` (what etcd's Go client calls ``WithRequireLeader``); a
stream opened that way is also cancelled when its member loses the leader later. The
next attempt then goes to another endpoint. Every call on this channel carries it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
import grpc.aio
from etcd3aio.connections import ConnectionManager

REQUIRE_LEADER = ("hasleader", "true")


def _with_leader(details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
    metadata = grpc.aio.Metadata(*(tuple(details.metadata or ())), REQUIRE_LEADER)
    return grpc.aio.ClientCallDetails(details.method, details.timeout, metadata,
                                      details.credentials, details.wait_for_ready)


# grpc.aio files each interceptor under the first call kind it implements, so each kind
# needs an object of its own.
class _UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_with_leader(details), request)


class _UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_with_leader(details), request)


class _StreamUnary(grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, details: Any,
                                     requests: Any) -> Any:
        return await continuation(_with_leader(details), requests)


class _StreamStream(grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, details: Any,
                                      requests: Any) -> Any:
        return await continuation(_with_leader(details), requests)


def require_leader() -> list[grpc.aio.ClientInterceptor]:
    """Interceptors that add :data:`REQUIRE_LEADER` to every kind of call."""
    return [_UnaryUnary(), _UnaryStream(), _StreamUnary(), _StreamStream()]


class LeaderChannels(ConnectionManager):
    """etcd3aio's connection manager, with :data:`REQUIRE_LEADER` on every call."""

    def __init__(self, endpoints: Sequence[str], options: Sequence[tuple[str, Any]]) -> None:
        super().__init__(endpoints)
        self.grpc_options += list(options)

    def get_channel(self, ca_cert: bytes | None = None, cert_key: bytes | None = None,
                    cert_chain: bytes | None = None,
                    tls_server_name: str | None = None) -> grpc.aio.Channel:
        interceptors = require_leader()
        if ca_cert is None:
            return grpc.aio.insecure_channel(self.target, options=self.grpc_options,
                                             interceptors=interceptors)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=ca_cert, private_key=cert_key, certificate_chain=cert_chain)
        options = list(self.grpc_options)
        if tls_server_name is not None:
            options.append(("grpc.ssl_target_name_override", tls_server_name))
        return grpc.aio.secure_channel(self.target, credentials, options=options,
                                       interceptors=interceptors)
