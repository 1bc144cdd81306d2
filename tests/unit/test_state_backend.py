"""tooling/state_backend.py against moto's S3 in server mode, with real authentication.

moto accepts any credentials by default. Its server has an auth switch,
POST /moto-api/reset-auth with the number of requests to let through
unauthenticated (what moto's own set_initial_no_auth_action_count does in
server mode): the fixture creates IAM users and their keys while auth is off,
then sets it to 0. From then on every S3 request must carry a SigV4
signature from a key moto issued, made with its secret, and an IAM policy that
permits the action, or moto answers InvalidAccessKeyId / SignatureDoesNotMatch
/ AccessDenied as Spaces would.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from infra.paths import REPO_ROOT
from tooling import state_backend as sb

REGION = "fra1"
OTHER_ACCOUNT = "111111111111"
S3_ALL = json.dumps({"Version": "2012-10-17",
                     "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]})


@dataclass(frozen=True)
class Moto:
    url: str
    good: sb.Credentials
    other: sb.Credentials


def _reset_auth(url: str, count: str) -> None:
    # text/plain: a form content type would make moto's request.data empty
    request = urllib.request.Request(f"{url}/moto-api/reset-auth", data=count.encode(), method="POST",
                                     headers={"Content-Type": "text/plain"})
    with urllib.request.urlopen(request, timeout=5) as answer:
        assert answer.status == 200


def _iam_user(url: str, name: str, account: str | None = None) -> sb.Credentials:
    iam = boto3.client("iam", endpoint_url=url, region_name="us-east-1",
                       aws_access_key_id="setup", aws_secret_access_key="setup")
    if account:  # moto files the user under this account; its key then acts as that account
        iam.meta.events.register("before-sign.iam.*",
                                 lambda request, **_: request.headers.__setitem__("x-moto-account-id", account))
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="spaces", PolicyDocument=S3_ALL)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return sb.Credentials(key["AccessKeyId"], key["SecretAccessKey"], "SPACES")


@pytest.fixture(scope="module")
def moto() -> Iterator[Moto]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    try:
        good = _iam_user(url, "pulumi-state")
        other = _iam_user(url, "someone-else", OTHER_ACCOUNT)
        _reset_auth(url, "0")
        yield Moto(url, good, other)
    finally:
        _reset_auth(url, "inf")
        urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=5)
        server.stop()


def _client(moto: Moto, credentials: sb.Credentials | None = None) -> Any:
    return sb.make_client(REGION, credentials or moto.good, moto.url)


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _state(client: Any, bucket: str) -> dict[str, Any]:
    """What a run could change, as seen by the bucket's owner."""
    acl = client.get_bucket_acl(Bucket=bucket)
    return {
        "buckets": sorted(b["Name"] for b in client.list_buckets()["Buckets"]),
        "location": client.get_bucket_location(Bucket=bucket).get("LocationConstraint"),
        "versioning": client.get_bucket_versioning(Bucket=bucket).get("Status"),
        "grants": [(g["Grantee"].get("ID"), g["Grantee"].get("URI"), g["Permission"]) for g in acl["Grants"]],
        "owner": acl["Owner"]["ID"],
    }


def _record_operations(client: Any) -> list[str]:
    seen: list[str] = []
    client.meta.events.register("before-call.s3.*", lambda model, **_: seen.append(model.name))
    return seen


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SPACES_"))}
    return subprocess.run([sys.executable, "-m", "tooling.state_backend", *args], cwd=REPO_ROOT,
                          env={**base, **env}, capture_output=True, text=True, timeout=60)


def _spaces_env(credentials: sb.Credentials) -> dict[str, str]:
    return {"SPACES_ACCESS_KEY_ID": credentials.access_key_id,
            "SPACES_SECRET_ACCESS_KEY": credentials.secret_access_key}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- creating, and running again ---------------------------------------------------

def test_first_run_creates_a_private_versioned_bucket(moto: Moto) -> None:
    client, bucket = _client(moto), _name("state-first")
    result = sb.ensure_state_bucket(client, bucket, REGION)
    assert (result.created, result.versioning_changed, result.acl_changed) == (True, True, False)
    state = _state(client, bucket)
    assert bucket in state["buckets"]
    assert state["location"] == REGION
    assert state["versioning"] == "Enabled"
    assert state["grants"] == [(state["owner"], None, "FULL_CONTROL")]


def test_second_run_changes_nothing(moto: Moto) -> None:
    client, bucket = _client(moto), _name("state-again")
    assert sb.ensure_state_bucket(client, bucket, REGION).created
    before = _state(client, bucket)
    operations = _record_operations(client)
    result = sb.ensure_state_bucket(client, bucket, REGION)
    assert result == sb.Result(bucket, REGION, created=False, versioning_changed=False, acl_changed=False)
    assert not result.changed
    assert operations and all(op.startswith(("List", "Get")) for op in operations), operations
    assert _state(client, bucket) == before


def test_a_loosened_bucket_is_repaired(moto: Moto) -> None:
    client, bucket = _client(moto), _name("state-drift")
    sb.ensure_state_bucket(client, bucket, REGION)
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    client.put_bucket_acl(Bucket=bucket, ACL="public-read")
    result = sb.ensure_state_bucket(client, bucket, REGION)
    assert (result.created, result.versioning_changed, result.acl_changed) == (False, True, True)
    state = _state(client, bucket)
    assert state["versioning"] == "Enabled"
    assert state["grants"] == [(state["owner"], None, "FULL_CONTROL")]


def test_a_bucket_policy_is_reported_not_removed(moto: Moto) -> None:
    client, bucket = _client(moto), _name("state-policy")
    sb.ensure_state_bucket(client, bucket, REGION)
    policy = json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/*"}]})
    client.put_bucket_policy(Bucket=bucket, Policy=policy)
    result = sb.ensure_state_bucket(client, bucket, REGION)
    assert not result.changed
    assert any("bucket policy" in w for w in result.warnings), result.warnings
    assert json.loads(client.get_bucket_policy(Bucket=bucket)["Policy"]) == json.loads(policy)


def test_existing_bucket_in_another_region_is_refused(moto: Moto) -> None:
    bucket = _name("state-elsewhere")
    sb.ensure_state_bucket(sb.make_client("ams3", moto.good, moto.url), bucket, "ams3")
    with pytest.raises(sb.OptionError, match=rf"^--region: your bucket '{bucket}' is in ams3, not fra1"):
        sb.ensure_state_bucket(_client(moto), bucket, REGION)


# --- the command ------------------------------------------------------------------

def test_cli_creates_then_reports_nothing_changed_and_prints_the_login_line(moto: Moto) -> None:
    bucket = _name("state-cli")
    env = _spaces_env(moto.good)
    first = _cli("--bucket", bucket, "--region", REGION, "--endpoint", moto.url, env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[0] == f"created bucket {bucket} ({REGION}): private, versioning enabled"
    login = f"pulumi login 's3://{bucket}?endpoint={moto.url}&region={REGION}&s3ForcePathStyle=true'"
    lines = [line.strip() for line in first.stdout.splitlines()]
    assert login in lines
    assert 'export AWS_ACCESS_KEY_ID="$SPACES_ACCESS_KEY_ID"' in lines
    assert 'export AWS_SECRET_ACCESS_KEY="$SPACES_SECRET_ACCESS_KEY"' in lines
    second = _cli("--bucket", bucket, "--region", REGION, "--endpoint", moto.url, env=env)
    assert second.returncode == 0, second.stderr
    assert "nothing changed" in second.stdout.splitlines()[0]
    assert login in [line.strip() for line in second.stdout.splitlines()]
    for run in (first, second):
        assert moto.good.secret_access_key not in run.stdout + run.stderr
        assert moto.good.access_key_id not in run.stdout + run.stderr


def test_cli_falls_back_to_the_aws_variables(moto: Moto) -> None:
    bucket = _name("state-awsvars")
    run = _cli("--bucket", bucket, "--region", REGION, "--endpoint", moto.url,
               env={"AWS_ACCESS_KEY_ID": moto.good.access_key_id,
                    "AWS_SECRET_ACCESS_KEY": moto.good.secret_access_key})
    assert run.returncode == 0, run.stderr
    assert "(AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are already set)" in run.stdout
    assert moto.good.secret_access_key not in run.stdout + run.stderr


def test_login_line_for_spaces() -> None:
    assert sb.login_url("team-state", "ams3") == \
        "s3://team-state?endpoint=https://ams3.digitaloceanspaces.com&region=ams3&s3ForcePathStyle=true"
    client = sb.make_client("sgp1", sb.Credentials("id", "secret", "SPACES"))
    assert client.meta.endpoint_url == "https://sgp1.digitaloceanspaces.com"
    assert client.meta.region_name == "sgp1"


def test_cli_without_credentials() -> None:
    run = _cli("--bucket", "team-state", "--region", REGION, env={})
    assert run.returncode == 2
    assert run.stderr.startswith("error: no Spaces credentials: set SPACES_ACCESS_KEY_ID and SPACES_SECRET_ACCESS_KEY")
    half = _cli("--bucket", "team-state", "--region", REGION, env={"SPACES_ACCESS_KEY_ID": "x"})
    assert half.returncode == 2
    assert half.stderr.startswith("error: SPACES_SECRET_ACCESS_KEY is not set")


# --- failures -----------------------------------------------------------------------

@pytest.mark.parametrize("wrong", ["unknown-key", "wrong-secret"])
def test_wrong_credentials_give_a_clear_error(moto: Moto, wrong: str) -> None:
    bucket = _name("state-badcreds")
    if wrong == "unknown-key":
        credentials, code = sb.Credentials("AKIANOTISSUEDBYMOTO0", moto.good.secret_access_key, "SPACES"), \
            "InvalidAccessKeyId"
    else:
        credentials, code = sb.Credentials(moto.good.access_key_id, "not-the-secret", "SPACES"), \
            "SignatureDoesNotMatch"
    with pytest.raises(sb.StateBackendError, match=rf"^Spaces rejected the credentials \({code}\)") as error:
        sb.ensure_state_bucket(_client(moto, credentials), bucket, REGION)
    assert error.value.exit_code == 2
    run = _cli("--bucket", bucket, "--region", REGION, "--endpoint", moto.url, env=_spaces_env(credentials))
    assert run.returncode == 2
    assert run.stderr.startswith(f"error: Spaces rejected the credentials ({code})")
    assert "SPACES_ACCESS_KEY_ID/SPACES_SECRET_ACCESS_KEY" in run.stderr
    assert len(run.stderr.splitlines()) == 1  # no traceback
    assert credentials.secret_access_key not in run.stdout + run.stderr
    assert bucket not in [b["Name"] for b in _client(moto).list_buckets()["Buckets"]]


def test_bucket_of_another_account_gives_a_clear_error(moto: Moto) -> None:
    bucket = _name("state-taken")
    theirs = _client(moto, moto.other)
    theirs.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    with pytest.raises(sb.StateBackendError, match=rf"^the bucket name '{bucket}' is already taken"):
        sb.ensure_state_bucket(_client(moto), bucket, REGION)
    run = _cli("--bucket", bucket, "--region", REGION, "--endpoint", moto.url, env=_spaces_env(moto.good))
    assert run.returncode == 2
    assert "already taken" in run.stderr and "choose another --bucket" in run.stderr
    assert theirs.get_bucket_versioning(Bucket=bucket).get("Status") is None  # theirs is untouched


def test_unreachable_endpoint_fails_fast(moto: Moto) -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    client = sb.make_client(REGION, moto.good, endpoint)
    sent: list[str] = []
    client.meta.events.register("before-send.s3.*", lambda request, **_: sent.append(request.url))
    started = time.monotonic()
    with pytest.raises(sb.StateBackendError, match=rf"^cannot reach {endpoint} \(EndpointConnectionError\)"):
        sb.ensure_state_bucket(client, "state-nowhere", REGION)
    assert time.monotonic() - started < 3
    assert len(sent) == 2  # one retry, then give up
    run = _cli("--bucket", "state-nowhere", "--region", REGION, "--endpoint", endpoint,
               env=_spaces_env(moto.good))
    assert run.returncode == 2
    assert run.stderr.startswith(f"error: cannot reach {endpoint} ")
    assert len(run.stderr.splitlines()) == 1


def test_endpoint_that_never_answers_times_out(moto: Moto) -> None:
    # A listener whose accept queue is full: the kernel drops further SYNs, so
    # a connect hangs as it would towards a black-holed address.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        endpoint = "http://127.0.0.1:%d" % listener.getsockname()[1]
        fillers = []
        try:
            while True:
                filler = socket.socket()
                filler.settimeout(0.3)
                try:
                    filler.connect(listener.getsockname())
                except (TimeoutError, BlockingIOError):
                    filler.close()
                    break
                fillers.append(filler)
                assert len(fillers) < 16, "the accept queue never filled"
            client = sb.make_client(REGION, moto.good, endpoint)
            started = time.monotonic()
            with pytest.raises(sb.StateBackendError, match=rf"^cannot reach {endpoint} \(ConnectTimeoutError\)"):
                sb.ensure_state_bucket(client, "state-hanging", REGION)
            assert time.monotonic() - started < sb.ATTEMPTS * sb.CONNECT_TIMEOUT + 2
        finally:
            for filler in fillers:
                filler.close()


@pytest.mark.parametrize("bucket", ["ab", "a" * 64, "State", "-state", "state-", "state_1", "state.prod", "stäte", ""])
def test_invalid_bucket_names_are_refused_before_any_request(bucket: str) -> None:
    client = sb.make_client(REGION, sb.Credentials("id", "secret", "SPACES"), f"http://127.0.0.1:{_closed_port()}")
    sent: list[str] = []
    client.meta.events.register("before-send.s3.*", lambda request, **_: sent.append(request.url))
    with pytest.raises(sb.OptionError, match=r"^--bucket: .* is not a valid Spaces bucket name; allowed: 3 to 63"):
        sb.ensure_state_bucket(client, bucket, REGION)
    assert sent == []
    run = _cli(f"--bucket={bucket}", "--region", REGION, env={})  # no credentials: validation comes first
    assert run.returncode == 2
    assert run.stderr.startswith("error: --bucket: ")


@pytest.mark.parametrize("region", ["nyc1", "FRA1", "us-east-1", "fra", ""])
def test_invalid_regions_are_refused_before_any_request(region: str) -> None:
    client = sb.make_client(REGION, sb.Credentials("id", "secret", "SPACES"), f"http://127.0.0.1:{_closed_port()}")
    sent: list[str] = []
    client.meta.events.register("before-send.s3.*", lambda request, **_: sent.append(request.url))
    with pytest.raises(sb.OptionError, match=r"^--region: .* is not a Spaces region; allowed: ams3, atl1, "):
        sb.ensure_state_bucket(client, "team-state", region)
    assert sent == []
    run = _cli("--bucket", "team-state", f"--region={region}", env={})
    assert run.returncode == 2
    assert run.stderr.startswith("error: --region: ")


@pytest.mark.parametrize("bucket", ["abc", "a" * 63, "0-9", "team-pulumi-state-2"])
def test_valid_bucket_names_pass(bucket: str) -> None:
    assert sb.validate_bucket(bucket) == bucket


@pytest.mark.parametrize("endpoint", ["127.0.0.1:9000", "ftp://host", "https://host/path", "https://u:p@host"])
def test_invalid_endpoints_are_refused(endpoint: str) -> None:
    run = _cli("--bucket", "team-state", "--region", REGION, f"--endpoint={endpoint}", env={})
    assert run.returncode == 2
    assert run.stderr.startswith("error: --endpoint: ")
