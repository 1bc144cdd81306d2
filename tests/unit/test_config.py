"""Every invalid setting fails with one message naming the setting and what is allowed."""

from __future__ import annotations

import pytest

from infra.config import ConfigError, parse
from infra.paths import REPO_ROOT
from tooling.mocks import Addresses, run_program
from tests.helpers.stacks import plain_config

RSA_2048 = (
    "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7"
    + "A" * 340 + "== short"
)


def _rsa_key(bits: int) -> str:
    import base64
    import struct

    def s(b: bytes) -> bytes:
        return struct.pack(">I", len(b)) + b
    modulus = b"\x00" + b"\xc5" * (bits // 8)
    blob = s(b"ssh-rsa") + s(b"\x01\x00\x01") + s(modulus)
    return "ssh-rsa " + base64.b64encode(blob).decode() + " test"


@pytest.mark.parametrize("key, value, fragment", [
    ("vpcIpRange", "10.0.0.0/33", "not a valid network"),
    ("vpcIpRange", "10.0.0.1/24", "not a valid network"),
    ("vpcIpRange", "8.8.8.0/24", "not an RFC 1918 range"),
    ("vpcIpRange", "10.0.0.0/12", "prefix /12 is out of range"),
    ("vpcIpRange", "192.168.1.0/28", "prefix /28 is out of range"),
    ("appNodeCount", 1, "1 is out of range"),
    ("appNodeCount", 10, "10 is out of range"),
    ("appNodeCount", "two", "not an integer"),
    ("region", "mars1", "unknown region"),
    ("adminSshKeys", [], "is empty"),
    ("adminSshKeys", ["ssh-ed25519 not*base64 me"], "base64 body is malformed"),
    ("adminSshKeys", ["ssh-dss AAAAB3NzaC1kc3MAAACBAP8= old"], "not a supported public key"),
    ("adminSshKeys", ["ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 x"], "malformed"),
    ("adminSshKeys", ["hello"], "not a supported public key"),
    ("sshAllowedCidrs", [], "is empty"),
    ("sshAllowedCidrs", ["300.1.2.0/24"], "not a valid CIDR"),
    ("sshAllowedCidrs", "not-a-list", "is not a list"),
    ("sshAllowedCidrs", ["0.0.0.0/0"], "opens SSH to 4294967296 IPv4 addresses"),
    ("sshAllowedCidrs", ["0.0.0.0/1", "128.0.0.0/1"], "more than a /8"),
    ("sshAllowedCidrs", ["10.0.0.0/8", "11.0.0.0/8"], "more than a /8"),
    ("sshAllowedCidrs", ["198.51.100.0/24", "::/0"], "IPv6 addresses"),
    ("sshAllowedCidrs", ["2001:db8::/31"], "more than a /32"),
    ("sshAllowedCidrs", [f"10.{i}.0.0/16" for i in range(65)], "has 65 entries"),
    ("sshAllowedCidrs", "[" * 30000 + "]" * 30000, "is not a list"),
    ("sshAllowedCidrs", ["198.51.100.0/24"] * 5000, "bytes long"),
    ("publicTcpPorts", [22], "port 22 is SSH"),
    ("publicTcpPorts", [3306], "cluster port"),
    ("publicTcpPorts", [70000], "out of range"),
    ("deployUser", "root", "system account"),
    ("deployUser", "_apt", "system account"),
    ("deployUser", "polkitd", "system account"),
    ("deployUser", "debian", "system account"),
    ("deployUser", "do-ha-canary", "system account"),
    ("deployUser", "Bad User", "not a valid user name"),
    ("alertEmail", "ops-at-example", "not an e-mail address"),
    ("alertEmail", "o" * 70_000 + "@example.com", "is 70012 bytes long"),
    ("appNodeCount", "9" * 5000, "not an integer"),
    ("environment", "QA", "not a DigitalOcean project environment"),
    ("image", "12345678", "image id"),
    ("witness", "maybe", "not a boolean"),
    ("nodeSize", "S 2 VCPU", "droplet size slug"),
    ("clusterApiUrl", "ftp://api.digitalocean.com", "not an API base URL"),
    ("clusterApiUrl", "https://api.digitalocean.com/v2", "not an API base URL"),
    ("clusterApiUrl", "http://api.digitalocean.com", "not an API base URL"),
    ("clusterApiUrl", "https://user:secret@api.digitalocean.com", "not an API base URL"),
    ("controlNode", "witness", "not an app node's name"),
    ("controlNode", "app3", "app3 is not an app node of this stack (appNodeCount is 2)"),
    ("failoverApiToken", "", "is not set"),
    ("failoverApiToken", "short", "is not an API token"),
    ("failoverApiToken", "has spaces in it but is long enough", "is not an API token"),
    ("alertSmtpHost", "smtp example.com", "not a host name or IPv4 address"),
    ("alertSmtpHost", "-smtp.example.com", "not a host name or IPv4 address"),
    ("alertSmtpPort", 25, "port 25 is blocked"),
    ("alertSmtpPort", 0, "out of range"),
    ("alertSmtpUser", "two words", "not an SMTP login"),
    ("alertSmtpUser", "alerts", "alertSmtpHost is empty"),
    ("alertFrom", "nobody", "not an e-mail address"),
    ("alertSmtpPassword", "one\ntwo", "not a one-line password"),
])
def test_invalid_setting_is_named_with_what_is_allowed(key: str, value: object, fragment: str) -> None:
    raw = plain_config("staging") | {key: value}
    with pytest.raises(ConfigError) as err:
        parse("staging", raw)
    message = str(err.value)
    assert message.startswith(f"do-ha-stack:{key}: ")
    assert fragment in message
    assert "allowed: " in message
    assert err.value.key == key
    if key == "failoverApiToken" and value:
        assert str(value) not in message  # a secret is never echoed back


ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKEEDKvaNL0z6KEvR1fQ3iWj9K3r4lzzh+husUhCQxzO"


@pytest.mark.parametrize("smuggled", [
    f"{ED25519} ops\n{ED25519} intruder",  # a second key in the comment's place
    f"{ED25519} ops\rroot",
    f"{ED25519} o\x00ps",
    f"{ED25519} ops\tat home",
])
def test_a_control_character_in_an_admin_key_is_refused(smuggled: str) -> None:
    with pytest.raises(ConfigError, match="adminSshKeys: the key 'ssh-ed25519 AAAA.*contains a control character"
                       ) as err:
        parse("staging", plain_config("staging") | {"adminSshKeys": [smuggled]})
    assert "allowed: " in str(err.value)


@pytest.mark.parametrize("written", [f"{ED25519} ops\n", f"{ED25519} ops\r\n", f"{ED25519}\tops", f"  {ED25519} ops "])
def test_whitespace_around_and_between_a_keys_fields_is_normalised(written: str) -> None:
    # YAML block scalars and CRLF files end keys with a newline; fields may be tab-separated.
    cfg = parse("staging", plain_config("staging") | {"adminSshKeys": [written]})
    assert cfg.admin_ssh_keys == (f"{ED25519} ops",)


@pytest.mark.parametrize("cidrs", [
    ["10.0.0.0/8"],  # exactly a /8
    ["10.0.0.0/8", "10.1.0.0/16"],  # overlapping ranges count once
    ["2001:db8::/32", "198.51.100.0/24"],
    [f"10.{i}.0.0/16" for i in range(64)],
])
def test_ssh_ranges_up_to_a_slash_8_or_a_slash_32_are_accepted(cidrs: list[str]) -> None:
    assert list(parse("staging", plain_config("staging") | {"sshAllowedCidrs": cidrs}).ssh_allowed_cidrs) == cidrs


def test_rsa_key_must_have_enough_bits() -> None:
    raw = plain_config("staging")
    ok = parse("staging", raw | {"adminSshKeys": [_rsa_key(4096)]})
    assert ok.admin_ssh_keys[0].startswith("ssh-rsa ")
    with pytest.raises(ConfigError, match="RSA key has 2048 bits"):
        parse("staging", raw | {"adminSshKeys": [_rsa_key(2048)]})


@pytest.mark.parametrize("missing", ["adminSshKeys", "sshAllowedCidrs", "alertEmail"])
def test_required_settings(missing: str) -> None:
    raw = plain_config("staging")
    del raw[missing]
    with pytest.raises(ConfigError, match=f"do-ha-stack:{missing}: is not set"):
        parse("staging", raw)


def test_unknown_setting_is_refused() -> None:
    with pytest.raises(ConfigError, match="do-ha-stack:nodeCount: is not a setting"):
        parse("staging", plain_config("staging") | {"nodeCount": 3})


def test_values_as_the_cli_passes_them() -> None:
    # The Pulumi CLI hands every value to the program as a string (lists as JSON).
    raw = {k: str(v).lower() if isinstance(v, bool) else v for k, v in plain_config("prod").items()}
    raw["appNodeCount"] = "3"
    raw["publicTcpPorts"] = "[443, 80, 443]"
    cfg = parse("prod", raw)
    assert cfg.app_node_count == 3 and cfg.protect is True
    assert cfg.public_tcp_ports == (80, 443)
    assert cfg.node_names == ("app1", "app2", "app3", "witness")
    assert cfg.environment == "Production"


def test_bad_config_registers_nothing() -> None:
    raw = {f"do-ha-stack:{k}": v for k, v in plain_config("staging").items()}
    raw["do-ha-stack:vpcIpRange"] = "172.32.0.0/16"
    addresses = Addresses.placeholders("10.0.0.0/16", ["app1", "app2", "witness"])
    with pytest.raises(Exception) as err:
        run_program("staging", raw, addresses)  # goes through __main__.py's config.load()
    assert "do-ha-stack:vpcIpRange" in str(err.value)
    from pulumi.runtime import settings
    # the program stopped before its first resource: only the root stack exists
    assert settings.SETTINGS.monitor.registrations == []


def test_pulumi_yaml_schema_matches_the_settings() -> None:
    # Every setting is declared with a type and description; defaults agree with the code's.

    import yaml

    from infra.config import REQUIRED, SECRET_SETTINGS, SETTINGS

    schema = yaml.safe_load((REPO_ROOT / "Pulumi.yaml").read_text())["config"]
    assert set(schema) == set(SETTINGS) | set(SECRET_SETTINGS)
    for key in SECRET_SETTINGS:
        assert schema[key]["secret"] is True and "default" not in schema[key], key
    for key, (default, _) in SETTINGS.items():
        assert schema[key]["type"] in ("string", "integer", "boolean", "array") and schema[key]["description"]
        if default is REQUIRED:
            assert "default" not in schema[key], key
        elif default is None:
            assert schema[key]["default"] == "", key
        else:
            assert schema[key]["default"] == default, key
    assert parse("staging", plain_config("staging") | {"environment": ""}).environment == "Staging"


SMTP = {"alertSmtpHost": "smtp.example.com", "alertSmtpUser": "alerts@example.com"}


def test_alert_mail_settings_default_to_no_relay_and_the_alert_address() -> None:
    cfg = parse("staging", plain_config("staging"))
    assert (cfg.alert_smtp_host, cfg.alert_smtp_port, cfg.alert_smtp_user) == ("", 587, "")
    assert cfg.alert_from == cfg.alert_email
    relayed = parse("staging", plain_config("staging") | SMTP | {"alertSmtpPassword": "s3cret pass",
                                                                 "alertFrom": "cluster@example.com"})
    assert (relayed.alert_smtp_host, relayed.alert_from) == ("smtp.example.com", "cluster@example.com")
    assert "s3cret" not in repr(relayed)  # secrets never enter StackConfig


@pytest.mark.parametrize("raw, key, fragment", [
    (SMTP, "alertSmtpPassword", "is not set, but alertSmtpUser is"),
    ({"alertSmtpHost": "smtp.example.com", "alertSmtpPassword": "pw"}, "alertSmtpPassword",
     "alertSmtpUser is empty"),
])
def test_a_relay_login_needs_both_halves(raw: dict, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse("staging", plain_config("staging") | raw)
    assert err.value.key == key and fragment in str(err.value) and "allowed: " in str(err.value)
    assert "pw" not in str(err.value).split("allowed:")[0]
