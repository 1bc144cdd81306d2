"""DigitalOcean Spaces in the lab: moto's S3 server in the switch namespace, with
real credential checking.

It stands in for what the program asks DigitalOcean for: the stack's bucket
(versioned, as infra/backups.py makes it) and a key that may use that bucket
only (the SpacesKey's grant, as an IAM user policy). moto checks every request's
signature and that policy once its first SETUP_ACTIONS requests (the set-up
below, unauthenticated as moto requires) are done. A second bucket exists to
show the key's limit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from infra.paths import REPO_ROOT
from lab.topology import GATEWAY, SWITCH_NS, run_dir

SPACES_PORT = 9000
ENDPOINT = f"http://{GATEWAY}:{SPACES_PORT}"
OTHER_BUCKET = "someone-elses-bucket"
START_TIMEOUT = 30.0
# The set-up's requests, each counted by moto before it starts checking: two
# buckets, versioning, a user, its policy, its key.
SETUP_ACTIONS = 6

# Run in the switch namespace with the host's Python (boto3): prints the key as JSON.
_SETUP = r"""
import json, sys
import boto3
endpoint, bucket, other = sys.argv[1:4]
kw = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="setup",
          aws_secret_access_key="setup")
s3, iam = boto3.client("s3", **kw), boto3.client("iam", **kw)
s3.create_bucket(Bucket=bucket)
s3.create_bucket(Bucket=other)
s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
iam.create_user(UserName="stack-backups")
iam.put_user_policy(UserName="stack-backups", PolicyName="bucket-readwrite", PolicyDocument=json.dumps({
    "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*",
    "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]}]}))
key = iam.create_access_key(UserName="stack-backups")["AccessKey"]
print(json.dumps([key["AccessKeyId"], key["SecretAccessKey"]]))
"""


def key_file() -> Path:
    return run_dir() / "spaces-key.json"


def spaces_key() -> tuple[str, str] | None:
    """The bucket key the lab's Spaces made (what the program's SpacesKey stands for)."""
    path = key_file()
    if not path.exists():
        return None
    access, secret = json.loads(path.read_text())
    return access, secret


def _in_switch(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["nsenter", f"--net=/run/netns/{SWITCH_NS}", *argv], capture_output=True, text=True,
                          timeout=60, **kwargs)  # type: ignore[call-overload]


def start_spaces(bucket: str) -> None:
    """moto's server in the switch namespace with the stack's bucket and key (the key to
    key_file(), root-only)."""
    log = run_dir() / "spaces.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{SWITCH_NS}", sys.executable, "-m", "moto.server", "-H", GATEWAY,
             "-p", str(SPACES_PORT)], cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
            env=os.environ | {"INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_ACTIONS)})
    (run_dir() / "spaces.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + START_TIMEOUT
    while _in_switch(["curl", "-s", "-o", "/dev/null", "-m", "2", f"{ENDPOINT}/moto-api/"]).returncode != 0:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"moto did not start: {log.read_text()[-2000:]}")
        time.sleep(0.3)
    made = _in_switch([sys.executable, "-c", _SETUP, ENDPOINT, bucket, OTHER_BUCKET], cwd=REPO_ROOT)
    if made.returncode != 0:
        raise RuntimeError(f"the lab's Spaces set-up failed: {made.stderr[-2000:]}")
    path = key_file()
    path.touch(mode=0o600)
    path.write_text(made.stdout.strip())
