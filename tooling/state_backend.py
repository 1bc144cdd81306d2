"""Create the DigitalOcean Spaces bucket that holds the Pulumi state.

    python -m tooling.state_backend --bucket NAME --region REGION [--endpoint URL]

Spaces speaks the S3 API, so this is plain boto3. The bucket ends up private
(canned ACL `private`) and versioned (every state checkpoint Pulumi overwrites
stays recoverable). Running it again changes nothing unless someone loosened
the bucket in between, and says what it did either way. It then prints the
`pulumi login` line and the variables Pulumi reads the Spaces key from; it
never prints a secret.

Exit codes: 0 done, 2 a problem the user can fix (bad option, credentials,
unreachable endpoint, name taken), 1 anything Spaces answered unexpectedly.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionError as BotoConnectionError
from botocore.exceptions import NoCredentialsError, ReadTimeoutError

# Spaces regions (the one place to update when DigitalOcean adds one).
SPACES_REGIONS = (
    "ams3", "atl1", "blr1", "fra1", "lon1", "nyc3", "sfo2", "sfo3", "sgp1", "syd1", "tor1",
)
BUCKET_RULE = "3 to 63 characters: lowercase letters, digits and hyphens, starting and ending with a letter or digit"
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")

# Fail fast: an unreachable endpoint costs at most ATTEMPTS x CONNECT_TIMEOUT
# seconds, not the SDK default of 60 s per attempt.
CONNECT_TIMEOUT, ATTEMPTS = 5, 2
CLIENT_CONFIG = Config(
    connect_timeout=CONNECT_TIMEOUT,
    read_timeout=20,
    retries={"total_max_attempts": ATTEMPTS, "mode": "standard"},
    s3={"addressing_style": "path"},
    # botocore >= 1.36 adds CRC32 checksums to every request that supports
    # them; S3-compatible stores do not all accept those. Only send (and
    # check) checksums where the S3 API requires them.
    request_checksum_calculation="when_required",
    response_checksum_validation="when_required",
)

_CREDENTIAL_ERRORS = frozenset({
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "AccessDenied",
    "Forbidden", "403", "AuthorizationHeaderMalformed", "InvalidSecurity",
})
_ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
_AUTH_USERS = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"


class StateBackendError(Exception):
    """A problem that stops the bucket setup; the message is meant for the user."""

    exit_code = 2


class OptionError(StateBackendError):
    """An option holds a value this tool cannot use (same shape as config errors)."""

    def __init__(self, option: str, problem: str, allowed: str) -> None:
        super().__init__(f"{option}: {problem}; allowed: {allowed}")
        self.option = option


class UnexpectedSpacesError(StateBackendError):
    exit_code = 1


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str
    source: str  # "SPACES" or "AWS": which pair of variables they came from

    @property
    def variables(self) -> tuple[str, str]:
        if self.source == "SPACES":
            return "SPACES_ACCESS_KEY_ID", "SPACES_SECRET_ACCESS_KEY"
        return "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"

    def __repr__(self) -> str:  # keep the secret out of tracebacks and logs
        return f"Credentials(access_key_id=<set>, secret_access_key=<set>, source={self.source!r})"


@dataclass(frozen=True)
class Result:
    bucket: str
    region: str
    created: bool
    versioning_changed: bool
    acl_changed: bool
    warnings: tuple[str, ...] = field(default=())

    @property
    def changed(self) -> bool:
        return self.created or self.versioning_changed or self.acl_changed


# --- validation ---------------------------------------------------------------

def validate_bucket(bucket: str) -> str:
    if not isinstance(bucket, str) or not _BUCKET_RE.fullmatch(bucket):
        raise OptionError("--bucket", f"{bucket!r} is not a valid Spaces bucket name", BUCKET_RULE)
    return bucket


def validate_region(region: str) -> str:
    if region not in SPACES_REGIONS:
        raise OptionError("--region", f"{region!r} is not a Spaces region", ", ".join(SPACES_REGIONS))
    return region


def validate_endpoint(endpoint: str) -> str:
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") \
            or parts.query or parts.fragment or parts.username or parts.password:
        raise OptionError("--endpoint", f"{endpoint!r} is not an endpoint URL",
                          "http(s)://HOST[:PORT] without a path, e.g. https://fra1.digitaloceanspaces.com")
    return endpoint.rstrip("/")


def spaces_endpoint(region: str) -> str:
    return f"https://{validate_region(region)}.digitaloceanspaces.com"


def login_url(bucket: str, region: str, endpoint: str | None = None) -> str:
    """The `pulumi login` URL for state in `bucket`.

    Pulumi's S3 backend (gocloud.dev s3blob) takes the endpoint, region and
    addressing style as query parameters. The endpoint carries its scheme:
    the AWS SDK v2 behind current Pulumi CLIs needs one (CLIs since 3.246 add
    https:// to a bare host themselves, older ones fail). Path-style
    addressing works on Spaces and on any S3-compatible endpoint.
    """
    validate_bucket(bucket)
    validate_region(region)
    endpoint = validate_endpoint(endpoint) if endpoint else spaces_endpoint(region)
    return f"s3://{bucket}?endpoint={endpoint}&region={region}&s3ForcePathStyle=true"


def credentials_from_env(env: Mapping[str, str] | None = None) -> Credentials:
    """The Spaces key pair: SPACES_* first, AWS_* (what Pulumi reads) second."""
    env = os.environ if env is None else env
    for source in ("SPACES", "AWS"):
        key_id, secret = env.get(f"{source}_ACCESS_KEY_ID", ""), env.get(f"{source}_SECRET_ACCESS_KEY", "")
        if key_id and secret:
            return Credentials(key_id, secret, source)
        if key_id or secret:
            missing = f"{source}_SECRET_ACCESS_KEY" if key_id else f"{source}_ACCESS_KEY_ID"
            raise StateBackendError(f"{missing} is not set, but its partner is; set both (a Spaces access key pair)")
    raise StateBackendError(
        "no Spaces credentials: set SPACES_ACCESS_KEY_ID and SPACES_SECRET_ACCESS_KEY "
        "(a Spaces access key pair from the DigitalOcean control panel, not an API token)"
    )


def make_client(region: str, credentials: Credentials, endpoint: str | None = None) -> Any:
    endpoint = validate_endpoint(endpoint) if endpoint else spaces_endpoint(region)
    return boto3.session.Session().client(
        "s3",
        region_name=validate_region(region),
        endpoint_url=endpoint,
        aws_access_key_id=credentials.access_key_id,
        aws_secret_access_key=credentials.secret_access_key,
        config=CLIENT_CONFIG,
    )


# --- the work -----------------------------------------------------------------

@contextmanager
def _spaces_errors(client: Any, doing: str, credential_vars: str) -> Iterator[None]:
    """Turn botocore failures into one short StateBackendError."""
    endpoint = client.meta.endpoint_url
    try:
        yield
    except (BotoConnectionError, ReadTimeoutError) as exc:
        raise StateBackendError(f"cannot reach {endpoint} ({type(exc).__name__}); "
                                "check --endpoint/--region and the network") from None
    except NoCredentialsError:
        raise StateBackendError(f"no credentials for {endpoint}; set {credential_vars}") from None
    except ClientError as exc:
        code = _code(exc)
        if code in _CREDENTIAL_ERRORS:
            raise StateBackendError(
                f"Spaces rejected the credentials ({code}) while {doing}: check {credential_vars}; "
                "they must be a Spaces access key pair with full access (a limited key cannot create buckets)"
            ) from None
        message = exc.response.get("Error", {}).get("Message") or ""
        raise UnexpectedSpacesError(f"Spaces refused {doing}: {code} {message}".strip()) from None


def _code(exc: ClientError) -> str:
    """The S3 error code; a bare HTTP status when the answer had no body (HEAD)."""
    error = exc.response.get("Error", {})
    return str(error.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))


def _is_private(acl: Mapping[str, Any]) -> bool:
    """True when the owner is the only grantee (the `private` canned ACL)."""
    owner = acl.get("Owner", {}).get("ID")
    for grant in acl.get("Grants", []):
        grantee = grant.get("Grantee", {})
        if grantee.get("URI") in (_ALL_USERS, _AUTH_USERS):
            return False
        if grantee.get("Type") == "CanonicalUser" and grantee.get("ID") == owner:
            continue
        return False
    return True


def ensure_state_bucket(client: Any, bucket: str, region: str,
                        credential_vars: str = "SPACES_ACCESS_KEY_ID/SPACES_SECRET_ACCESS_KEY") -> Result:
    """Make `bucket` exist in `region`, owned by the caller, private and versioned.

    Idempotent: on a bucket that already is all of that, it only reads.
    Raises StateBackendError (validation happens before any request).
    """
    validate_bucket(bucket)
    validate_region(region)

    def call(doing: str) -> Any:
        return _spaces_errors(client, doing, credential_vars)

    # ListBuckets first: it proves the credentials (a HEAD on the bucket
    # answers a bare 403 both for bad keys and for someone else's bucket) and
    # tells us whether the bucket is already ours.
    with call("listing your buckets"):
        owned = {b["Name"] for b in client.list_buckets().get("Buckets", [])}

    created = False
    if bucket not in owned:
        with call(f"creating bucket {bucket}"):
            try:
                client.create_bucket(
                    Bucket=bucket, ACL="private",
                    CreateBucketConfiguration={"LocationConstraint": region},
                )
                created = True
            except ClientError as exc:
                code = _code(exc)
                if code == "BucketAlreadyExists":
                    raise StateBackendError(
                        f"the bucket name {bucket!r} is already taken in Spaces (names are global: another "
                        "account, or a Space of yours in another region, has it); choose another --bucket"
                    ) from None
                if code != "BucketAlreadyOwnedByYou":  # lost a race with ourselves: fine
                    raise

    if not created:
        with call(f"reading the location of {bucket}"):
            location = client.get_bucket_location(Bucket=bucket).get("LocationConstraint")
        if location and location != region:
            raise OptionError("--region", f"your bucket {bucket!r} is in {location}, not {region}", location)

    with call(f"reading versioning of {bucket}"):
        status = client.get_bucket_versioning(Bucket=bucket).get("Status")
    versioning_changed = status != "Enabled"
    if versioning_changed:
        with call(f"enabling versioning on {bucket}"):
            client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})

    # Spaces has no PublicAccessBlock API (S3's block-public-access switch),
    # so it cannot be turned on there; the bucket ACL is what Spaces honours
    # for anonymous access. A grant to anyone but the owner is reset to the
    # `private` canned ACL. Objects Pulumi writes get no ACL of their own,
    # which on Spaces and S3 means private.
    with call(f"reading the ACL of {bucket}"):
        acl = client.get_bucket_acl(Bucket=bucket)
    acl_changed = not _is_private(acl)
    if acl_changed:
        with call(f"making {bucket} private"):
            client.put_bucket_acl(Bucket=bucket, ACL="private")

    # A bucket policy can also grant public reads. One may be deliberate (an
    # IP allow-list), so it is reported, not removed.
    warnings: list[str] = []
    with call(f"reading the policy of {bucket}"):
        try:
            client.get_bucket_policy(Bucket=bucket)
            warnings.append(f"bucket {bucket} has a bucket policy; make sure it grants no public access")
        except ClientError as exc:
            if _code(exc) != "NoSuchBucketPolicy":
                warnings.append(f"could not read the bucket policy ({_code(exc)}); review it in the control panel")

    return Result(bucket, region, created, versioning_changed, acl_changed, tuple(warnings))


# --- the command ----------------------------------------------------------------

def describe(result: Result) -> str:
    where = f"bucket {result.bucket} ({result.region})"
    if result.created:
        return f"created {where}: private, versioning enabled"
    if not result.changed:
        return f"{where} already exists and is yours, private and versioned: nothing changed"
    fixes = [what for what, did in (("enabled versioning", result.versioning_changed),
                                     ("reset the ACL to private", result.acl_changed)) if did]
    return f"{where} already existed and is yours; " + " and ".join(fixes)


def login_instructions(result: Result, endpoint: str | None, credentials: Credentials) -> str:
    lines = ["", "Pulumi reads the Spaces key from the AWS variables; in the shell that runs pulumi:"]
    if credentials.source == "SPACES":
        lines += ['  export AWS_ACCESS_KEY_ID="$SPACES_ACCESS_KEY_ID"',
                  '  export AWS_SECRET_ACCESS_KEY="$SPACES_SECRET_ACCESS_KEY"']
    else:
        lines += ["  (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are already set)"]
    lines += [f"  pulumi login '{login_url(result.bucket, result.region, endpoint)}'"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tooling.state_backend",
        description="Create (or check) a private, versioned Spaces bucket for the Pulumi state.",
    )
    parser.add_argument("--bucket", required=True, help=f"bucket name ({BUCKET_RULE})")
    parser.add_argument("--region", required=True, help="Spaces region: " + ", ".join(SPACES_REGIONS))
    parser.add_argument("--endpoint", help="S3 endpoint URL (default https://REGION.digitaloceanspaces.com)")
    args = parser.parse_args(argv)
    try:
        validate_bucket(args.bucket)
        validate_region(args.region)
        endpoint = validate_endpoint(args.endpoint) if args.endpoint else None
        credentials = credentials_from_env()
        client = make_client(args.region, credentials, endpoint)
        result = ensure_state_bucket(client, args.bucket, args.region, "/".join(credentials.variables))
    except StateBackendError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(describe(result))
    for warning in result.warnings:
        print(f"warning: {warning}")
    print(login_instructions(result, endpoint, credentials))
    return 0


if __name__ == "__main__":
    sys.exit(main())
