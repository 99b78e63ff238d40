"""The gRPC front end: LogClassifier, health and reflection on the configured addresses."""

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from logclass.address import split_host_port
from logclass.api.logclass.v1 import admin_pb2 as admin_pb
from logclass.api.logclass.v1 import admin_pb2_grpc as admin_grpc
from logclass.api.logclass.v1 import classifier_pb2 as pb
from logclass.api.logclass.v1 import classifier_pb2_grpc as pb_grpc
from logclass.config.settings import ServerSettings, Settings
from logclass.engine.runtime import SwapStep
from logclass.secrets import load_token
from logclass.security import BearerTokenInterceptor, server_credentials
from logclass.server import ServeError
from logclass.server.admin import AdminServicer
from logclass.server.service import LogClassifierServicer
from logclass.service.admin import AdminService
from logclass.service.classifier import ClassifierService

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["LogClassifier"].full_name
ADMIN_SERVICE_NAME = admin_pb.DESCRIPTOR.services_by_name["Admin"].full_name
# The Admin service's methods: the admin token guards them, not server.auth's.
ADMIN_METHODS = f"/{ADMIN_SERVICE_NAME}/"


def addresses(server: ServerSettings) -> list[str]:
    out = []
    if server.listen:
        split_host_port(server.listen, "server.listen")  # a port out of range fails here, not in grpc
        out.append(server.listen)
    if server.unix_socket:
        out.append(f"unix:{server.unix_socket}")
    if not out:
        raise ServeError("server.listen and server.unix_socket are both null: give at least one address")
    return out


class GrpcFrontEnd:
    """Listens before the models load, so probes see NOT_SERVING (not a refused connection);
    ``serving`` turns it SERVING once the service has the loaded engine."""

    def __init__(self, settings: Settings, service: ClassifierService, admin: AdminService | None = None) -> None:
        """``admin``: served when ``server.admin_auth`` gives a token (never without one)."""
        server = settings.server
        self.settings = settings
        options = [
            ("grpc.max_receive_message_length", server.max_request_bytes),
            ("grpc.max_send_message_length", server.max_request_bytes * 2),
        ]
        self.token = load_token(server.auth)
        admin_token = load_token(server.admin_auth, "server.admin_auth") if admin is not None else None
        self.admin = admin_token is not None
        self.credentials = server_credentials(server.tls)
        interceptors = (
            [BearerTokenInterceptor(self.token, admin_token, admin_prefix=ADMIN_METHODS)]
            if self.token or admin_token
            else []
        )
        self.server = grpc.aio.server(options=options, interceptors=interceptors)
        servicer = LogClassifierServicer(service)
        pb_grpc.add_LogClassifierServicer_to_server(servicer, self.server)  # type: ignore[no-untyped-call]
        services = [SERVICE_NAME]
        if admin is not None and self.admin:
            admin_grpc.add_AdminServicer_to_server(AdminServicer(admin), self.server)  # type: ignore[no-untyped-call]
            services.append(ADMIN_SERVICE_NAME)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [*services, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
            self.server,
        )
        self.addresses = addresses(server)

    def describe(self) -> str:
        tls = self.settings.server.tls
        return (
            f"gRPC on {', '.join(self.addresses)} (tls "
            f"{'mutual' if tls.client_ca_file else 'on' if self.credentials else 'off'}, "
            f"token {'required' if self.token else 'off'}; admin service {'on' if self.admin else 'off'})"
        )

    async def start(self) -> None:
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        for address in self.addresses:
            try:
                if self.credentials is not None:
                    self.server.add_secure_port(address, self.credentials)
                else:
                    self.server.add_insecure_port(address)
            except RuntimeError as exc:
                raise ServeError(f"cannot listen on {address}: {exc}; is another server using it?") from exc
        await self.server.start()

    async def serving(self) -> None:
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)

    async def _set_health(self, status: Any) -> None:
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)

    def how_to_call(self) -> str:
        return how_to_call(self.settings.server)

    def on_swap(self, settings: Settings) -> SwapStep | None:
        return None  # every call reads the runtime: nothing here holds what a reload changes

    async def stop(self, grace_s: float) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)


def how_to_call(server: ServerSettings) -> str:
    """Commands that reach this server as configured, for the start-up log."""
    tls = server.tls
    address = server.listen or f"unix:{server.unix_socket}"
    security = "-cacert CA.pem" if tls.cert_file else "-plaintext"
    if tls.client_ca_file:
        security += " -cert CLIENT.pem -key CLIENT.key"
    auth = " -H 'authorization: Bearer TOKEN'" if load_token(server.auth) else ""
    body = '{"records":[{"source":"billing","message":"User 12345 logged in."}]}'
    lines = [f"  grpcurl {security}{auth} -d '{body}' {address} logclass.v1.LogClassifier/Classify"]
    if not tls.cert_file and not auth:
        lines.insert(0, f"  logclass classify --server {address} logs.csv")
    if server.metrics_listen:
        lines.append(f"  curl -s http://{server.metrics_listen}/metrics | grep ^logclass_")
    return "\n".join(lines)
