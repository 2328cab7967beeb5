"""Configuration: one TOML file loaded into frozen, typed, validated settings.

Every key is documented in ``config/gateway.example.toml``. Validation happens once at
start; a :class:`gateway.errors.ConfigError` names the dotted key and says why it is wrong.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

from gateway.errors import ConfigError

CONFIG_ENV = "MODALITY_GATEWAY_CONFIG"
LOCAL_BACKEND = "local"

LogFormat = Literal["console", "json"]
LogLevel = Literal["debug", "info", "warning", "error"]
MppsDialect = Literal["standard", "draft"]
MppsRetrieveMode = Literal["n-get", "mirror"]
CalledAePolicy = Literal["strict", "any"]


@dataclass(frozen=True)
class PeerSettings:
    """Per calling-AE overrides for the DIMSE front (``[dimse.peers.<AE>]``)."""

    charset: str | None = None  # Specific Character Set to answer this modality in


@dataclass(frozen=True)
class DimseSettings:
    """The DIMSE front (``[dimse]``)."""

    enabled: bool = True
    host: str = "0.0.0.0"
    port: int = 11112
    ae_title: str = "MODALITY_GW"
    backend: str = LOCAL_BACKEND
    allowed_calling_ae_titles: tuple[str, ...] = ()
    max_associations: int = 10
    called_ae_policy: CalledAePolicy = "strict"
    acse_timeout_s: float = 30.0
    dimse_timeout_s: float = 30.0
    network_timeout_s: float = 60.0
    operation_timeout_s: float = 60.0
    peers: Mapping[str, PeerSettings] = field(default_factory=dict)


@dataclass(frozen=True)
class WebSettings:
    """The DICOMweb front (``[web]``)."""

    enabled: bool = True
    host: str = "0.0.0.0"
    port: int = 8080
    base_path: str = "/dicomweb"
    backend: str = LOCAL_BACKEND
    max_body_bytes: int = 1_048_576
    max_search_limit: int = 1000
    public_url: str | None = None  # base URI used in Warning headers when behind a proxy


@dataclass(frozen=True)
class RetentionSettings:
    """Periodic purge of old items (``[store.retention]``); 0 days keeps forever."""

    sps_days: int = 0
    mpps_days: int = 0
    interval_s: float = 3600.0


@dataclass(frozen=True)
class StoreSettings:
    """The embedded SQLite store (``[store]``)."""

    path: Path = Path("./var/gateway.sqlite3")
    sps_status_follow_up: bool = True
    retention: RetentionSettings = field(default_factory=RetentionSettings)


@dataclass(frozen=True)
class LocalBackendSettings:
    """``type = "local"``: the embedded store."""

    type: Literal["local"] = "local"


@dataclass(frozen=True)
class DicomwebBackendSettings:
    """``type = "dicomweb"``: an upstream DICOMweb origin server (we are its user agent)."""

    url: str
    type: Literal["dicomweb"] = "dicomweb"
    timeout_s: float = 10.0
    page_size: int = 100
    first_page_size: int | None = None  # None: page_size (one request for most searches)
    mpps_dialect: MppsDialect = "standard"
    bearer_token_env: str | None = None
    basic_user_env: str | None = None
    basic_password_env: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    ca_file: Path | None = None
    verify_tls: bool = True
    store_and_forward: bool = True  # queue MPPS writes durably while the upstream is down
    max_queue_age_h: float = 72.0  # a queued message older than this is dead-lettered
    retry_initial_s: float = 1.0  # first redelivery delay (doubles, with jitter)
    retry_max_s: float = 300.0  # longest delay between redeliveries
    circuit_breaker_s: float = 30.0  # queue writes at once this long after "not performed"


@dataclass(frozen=True)
class DimseBackendSettings:
    """``type = "dimse"``: an upstream DIMSE RIS (we are its SCU)."""

    host: str
    port: int
    called_ae_title: str
    type: Literal["dimse"] = "dimse"
    calling_ae_title: str = "MODALITY_GW"
    timeout_s: float = 10.0
    max_associations: int = 8
    matching_keys: tuple[str, ...] = ()
    mpps_retrieve: MppsRetrieveMode = "n-get"
    charset: str = "ISO_IR 192"
    store_and_forward: bool = True  # queue MPPS writes durably while the upstream is down
    max_queue_age_h: float = 72.0  # a queued message older than this is dead-lettered
    retry_initial_s: float = 1.0  # first redelivery delay (doubles, with jitter)
    retry_max_s: float = 300.0  # longest delay between redeliveries
    circuit_breaker_s: float = 30.0  # queue writes at once this long after "not performed"


BackendSettings = LocalBackendSettings | DicomwebBackendSettings | DimseBackendSettings
_BACKEND_TYPES: dict[str, type[Any]] = {
    "local": LocalBackendSettings,
    "dicomweb": DicomwebBackendSettings,
    "dimse": DimseBackendSettings,
}


@dataclass(frozen=True)
class Settings:
    """The whole configuration."""

    log_level: LogLevel = "info"
    log_format: LogFormat = "console"
    log_phi: bool = False
    strict_status_codes: bool = False
    shutdown_grace_s: float = 10.0
    dimse: DimseSettings = field(default_factory=DimseSettings)
    web: WebSettings = field(default_factory=WebSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    backends: Mapping[str, BackendSettings] = field(
        default_factory=lambda: {LOCAL_BACKEND: LocalBackendSettings()}
    )


# --- loading --------------------------------------------------------------------------

T = TypeVar("T")


def load_settings(path: Path | None = None) -> Settings:
    """Load ``path``, else ``$MODALITY_GATEWAY_CONFIG``, else the built-in defaults."""
    if path is None and os.environ.get(CONFIG_ENV):
        path = Path(os.environ[CONFIG_ENV])
    if path is None:
        return settings_from_mapping({})
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(str(path), "configuration file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"not valid TOML: {exc}") from None
    return settings_from_mapping(data)


def settings_from_mapping(data: Mapping[str, Any]) -> Settings:
    """Build and cross-check settings from parsed TOML."""
    raw = dict(data)
    raw_backends = raw.pop("backends", {})
    if not isinstance(raw_backends, Mapping):
        raise ConfigError("backends", "must be a table of [backends.NAME] tables")
    settings = _build(Settings, raw, "")
    backends: dict[str, BackendSettings] = {LOCAL_BACKEND: LocalBackendSettings()}
    for name, table in raw_backends.items():
        backends[name] = _build_backend(name, table)
    settings = dataclasses.replace(settings, backends=backends)
    _cross_check(settings)
    return settings


def _build_backend(name: str, table: Any) -> BackendSettings:
    key = f"backends.{name}"
    if not isinstance(table, Mapping):
        raise ConfigError(key, "must be a table")
    kind = table.get("type")
    if kind not in _BACKEND_TYPES:
        choices = ", ".join(repr(k) for k in _BACKEND_TYPES)
        raise ConfigError(f"{key}.type", f"must be one of {choices}")
    if name == LOCAL_BACKEND and kind != "local":
        raise ConfigError(key, "the name 'local' is reserved for the embedded store")
    built: BackendSettings = _build(_BACKEND_TYPES[kind], table, key)
    return built


def _build(cls: type[T], table: Mapping[str, Any], prefix: str) -> T:
    """Instantiate dataclass ``cls`` from ``table``, rejecting unknown keys and bad types."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for name, value in table.items():
        key = f"{prefix}.{name}" if prefix else name
        if name not in fields:
            raise ConfigError(key, "unknown key")
        values[name] = _coerce(hints[name], value, key)
    for name, f in fields.items():
        no_default = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if no_default and name not in values:
            key = f"{prefix}.{name}" if prefix else name
            raise ConfigError(key, "is required")
    return cls(**values)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = get_origin(hint)
    args = get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(key, f"must be one of {', '.join(repr(a) for a in args)}")
        return value
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise ConfigError(key, "must be a table")
        return _build(hint, value, key)  # type: ignore[arg-type]
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(key, "must be a list")
        return tuple(_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (Mapping, dict) or hint is Mapping:
        if not isinstance(value, Mapping):
            raise ConfigError(key, "must be a table")
        return {str(k): _coerce(args[1], v, f"{key}.{k}") for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, "must be true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, "must be an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(key, "must be a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(key, "must be a string")
        return value
    if hint is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(key, "must be a non-empty path string")
        return Path(value)
    raise ConfigError(key, f"unsupported setting type {hint!r}")  # pragma: no cover


# --- cross-field validation -------------------------------------------------------------


def validate_ae_title(title: str, key: str) -> None:
    """AE titles: 1-16 characters of the default repertoire, no backslash or controls."""
    if not title.strip():
        raise ConfigError(key, "AE title must not be empty")
    if len(title) > 16:
        raise ConfigError(key, f"AE title {title!r} is longer than 16 characters")
    if "\\" in title:
        raise ConfigError(key, "AE title must not contain a backslash")
    if not title.isascii() or any(ord(c) < 0x20 for c in title):
        raise ConfigError(key, "AE title must be printable ASCII")


def validate_dicomweb_auth(backend: DicomwebBackendSettings, key: str) -> None:
    """Bearer token or basic credentials (both variables), not both."""
    basic = (backend.basic_user_env, backend.basic_password_env)
    if any(basic) and not all(basic):
        raise ConfigError(key, "basic_user_env and basic_password_env go together")
    if backend.bearer_token_env and any(basic):
        raise ConfigError(key, "set either bearer_token_env or basic_*_env, not both")


def _check_port(port: int, key: str, *, allow_zero: bool = True) -> None:
    low = 0 if allow_zero else 1
    if not low <= port <= 65535:
        raise ConfigError(key, f"port {port} is out of range {low}-65535")


def _check_positive(value: float, key: str) -> None:
    if value <= 0:
        raise ConfigError(key, "must be greater than 0")


def _cross_check(s: Settings) -> None:
    d, w = s.dimse, s.web
    validate_ae_title(d.ae_title, "dimse.ae_title")
    _check_port(d.port, "dimse.port")
    _check_port(w.port, "web.port")
    for i, title in enumerate(d.allowed_calling_ae_titles):
        validate_ae_title(title, f"dimse.allowed_calling_ae_titles[{i}]")
    for ae in d.peers:
        validate_ae_title(ae, f"dimse.peers.{ae}")
    for name, value in (
        ("dimse.max_associations", d.max_associations),
        ("dimse.acse_timeout_s", d.acse_timeout_s),
        ("dimse.dimse_timeout_s", d.dimse_timeout_s),
        ("dimse.network_timeout_s", d.network_timeout_s),
        ("dimse.operation_timeout_s", d.operation_timeout_s),
        ("web.max_body_bytes", w.max_body_bytes),
        ("web.max_search_limit", w.max_search_limit),
        ("shutdown_grace_s", s.shutdown_grace_s),
        ("store.retention.interval_s", s.store.retention.interval_s),
    ):
        _check_positive(value, name)
    if s.store.retention.sps_days < 0 or s.store.retention.mpps_days < 0:
        raise ConfigError("store.retention", "days must be 0 (keep) or more")
    if not w.base_path.startswith("/") or (w.base_path != "/" and w.base_path.endswith("/")):
        raise ConfigError("web.base_path", "must start with '/' and not end with '/'")
    for front in ("dimse", "web"):
        name = getattr(s, front).backend
        if name not in s.backends:
            raise ConfigError(f"{front}.backend", f"backend {name!r} is not defined in [backends]")
    for name, backend in s.backends.items():
        key = f"backends.{name}"
        if isinstance(backend, DimseBackendSettings):
            validate_ae_title(backend.called_ae_title, f"{key}.called_ae_title")
            validate_ae_title(backend.calling_ae_title, f"{key}.calling_ae_title")
            _check_port(backend.port, f"{key}.port", allow_zero=False)
            _check_positive(backend.max_associations, f"{key}.max_associations")
            _check_positive(backend.timeout_s, f"{key}.timeout_s")
        elif isinstance(backend, DicomwebBackendSettings):
            if not backend.url.startswith(("http://", "https://")):
                raise ConfigError(f"{key}.url", "must be an http:// or https:// URL")
            _check_positive(backend.page_size, f"{key}.page_size")
            if backend.first_page_size is not None:
                _check_positive(backend.first_page_size, f"{key}.first_page_size")
            validate_dicomweb_auth(backend, key)
            _check_positive(backend.timeout_s, f"{key}.timeout_s")
        if (
            isinstance(backend, DimseBackendSettings | DicomwebBackendSettings)
            and backend.circuit_breaker_s < 0
        ):
            raise ConfigError(f"{key}.circuit_breaker_s", "must be 0 (off) or more")
