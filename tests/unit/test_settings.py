"""Configuration: defaults, the example file, and errors that name the bad key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.settings import (
    DicomwebBackendSettings,
    DimseBackendSettings,
    LocalBackendSettings,
    load_settings,
    settings_from_mapping,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "gateway.example.toml"


def test_defaults_without_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODALITY_GATEWAY_CONFIG", raising=False)
    s = load_settings()
    assert (s.dimse.port, s.dimse.ae_title, s.dimse.backend) == (11112, "MODALITY_GW", "local")
    assert (s.web.port, s.web.base_path, s.web.backend) == (8080, "/dicomweb", "local")
    assert s.store.path == Path("./var/gateway.sqlite3")
    assert s.backends == {"local": LocalBackendSettings()}
    assert s.log_phi is False


def test_example_file_is_valid_and_equals_defaults() -> None:
    assert load_settings(EXAMPLE) == settings_from_mapping({})


def test_env_variable_names_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text('[dimse]\nae_title = "FROM_ENV"\n')
    monkeypatch.setenv("MODALITY_GATEWAY_CONFIG", str(path))
    assert load_settings().dimse.ae_title == "FROM_ENV"


def test_backends_of_each_type() -> None:
    s = settings_from_mapping(
        {
            "dimse": {"backend": "cloud"},
            "web": {"backend": "ris"},
            "backends": {
                "cloud": {"type": "dicomweb", "url": "https://ris.example.org/dicomweb"},
                "ris": {
                    "type": "dimse",
                    "host": "ris.example.org",
                    "port": 104,
                    "called_ae_title": "RIS",
                    "matching_keys": ["PatientID"],
                },
            },
        }
    )
    assert isinstance(s.backends["cloud"], DicomwebBackendSettings)
    ris = s.backends["ris"]
    assert isinstance(ris, DimseBackendSettings)
    assert ris.matching_keys == ("PatientID",)
    assert ris.mpps_retrieve == "n-get"


@pytest.mark.parametrize(
    ("data", "key", "reason"),
    [
        ({"dimse": {"ae_title": "A" * 17}}, "dimse.ae_title", "longer than 16"),
        ({"dimse": {"ae_title": "BAD\\AE"}}, "dimse.ae_title", "backslash"),
        ({"dimse": {"ae_title": "  "}}, "dimse.ae_title", "empty"),
        ({"dimse": {"colour": "red"}}, "dimse.colour", "unknown key"),
        ({"shiny": True}, "shiny", "unknown key"),
        ({"dimse": {"port": 70000}}, "dimse.port", "out of range"),
        ({"web": {"port": -1}}, "web.port", "out of range"),
        ({"dimse": {"port": "104"}}, "dimse.port", "integer"),
        ({"dimse": {"enabled": "yes"}}, "dimse.enabled", "true or false"),
        ({"web": {"backend": "nowhere"}}, "web.backend", "not defined"),
        ({"dimse": {"backend": "nowhere"}}, "dimse.backend", "not defined"),
        ({"web": {"base_path": "dicomweb"}}, "web.base_path", "start with"),
        ({"log_format": "xml"}, "log_format", "one of"),
        (
            {"dimse": {"allowed_calling_ae_titles": "CT01"}},
            "dimse.allowed_calling_ae_titles",
            "list",
        ),
        (
            {"dimse": {"allowed_calling_ae_titles": ["X" * 17]}},
            "allowed_calling_ae_titles[0]",
            "16",
        ),
        ({"dimse": {"max_associations": 0}}, "dimse.max_associations", "greater than 0"),
        ({"backends": {"x": {"type": "ftp"}}}, "backends.x.type", "one of"),
        ({"backends": {"x": {"type": "dicomweb"}}}, "backends.x.url", "required"),
        ({"backends": {"x": {"type": "dicomweb", "url": "ftp://a"}}}, "backends.x.url", "http"),
        (
            {
                "backends": {
                    "x": {
                        "type": "dimse",
                        "host": "h",
                        "port": 104,
                        "called_ae_title": "R",
                        "mpps_retrieve": "sometimes",
                    }
                }
            },
            "backends.x.mpps_retrieve",
            "one of",
        ),
        (
            {"backends": {"local": {"type": "dicomweb", "url": "http://a"}}},
            "backends.local",
            "reserved",
        ),
        ({"dimse": {"peers": {"CT1": {"charset": 5}}}}, "dimse.peers.CT1.charset", "string"),
    ],
)
def test_bad_configuration_names_the_key(data: dict[str, object], key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_mapping(data)
    assert key in info.value.key
    assert reason in str(info.value)


def _check_config(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )


def test_check_config_accepts_the_example() -> None:
    result = _check_config("--config", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stdout


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ('[dimse]\nae_title = "ABCDEFGHIJKLMNOPQ"\n', "dimse.ae_title"),
        ("[web]\nflavour = 1\n", "web.flavour: unknown key"),
        ("[dimse\n", "not valid TOML"),
    ],
)
def test_check_config_rejects_with_the_key(tmp_path: Path, toml: str, needle: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    result = _check_config("--config", str(path))
    assert result.returncode == 2
    assert needle in result.stderr


def test_check_config_missing_file(tmp_path: Path) -> None:
    result = _check_config("--config", str(tmp_path / "absent.toml"))
    assert result.returncode == 2
    assert "not found" in result.stderr


@pytest.mark.parametrize(
    "auth",
    [
        {"basic_user_env": "U"},
        {"bearer_token_env": "T", "basic_user_env": "U", "basic_password_env": "P"},
    ],
)
def test_check_config_catches_bad_credential_combinations(auth: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_mapping(
            {"backends": {"cloud": {"type": "dicomweb", "url": "https://ris", **auth}}}
        )
    assert info.value.key == "backends.cloud"
