"""GlusterFS over TLS: each node's key, certificate and CA travel in its cluster-node
bundle (a secret), the certificates come from a CA of their own, and the bricks admit
exactly the members' names."""

from __future__ import annotations

import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from infra.storage import TLS_CA, TLS_CERT, TLS_KEY
from tests.helpers.stacks import bundle_files
from tests.unit.test_step_args import passed_args
from tooling.mocks import SECRET_MARKER, Run
from tooling.render import commands


def _plan(run: Run) -> dict[str, dict]:
    return {c["name"]: c for c in commands(run, reveal=True)}


def _cn(cert: x509.Certificate) -> str:
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def test_every_node_gets_its_own_key_and_a_certificate_for_its_name_from_the_storage_ca(staging: Run) -> None:
    plan = _plan(staging)
    db_ca = bundle_files(plan["app1-db-node"]["stdin"])["/etc/mysql/tls/ca.pem"][2]
    keys = set()
    for node, addresses in staging.outputs["nodes"].items():
        step = staging.by_name(f"{node}-cluster-node")
        assert "stdin" in step.secret_inputs and step.inputs["stdin"] == SECRET_MARKER
        files = bundle_files(plan[f"{node}-cluster-node"]["stdin"])
        assert files[TLS_KEY][:2] == ("0600", "root:root") and f"secretfile 0600 root:root {TLS_KEY} " in \
            plan[f"{node}-cluster-node"]["stdin"]
        assert files[TLS_CERT][:2] == files[TLS_CA][:2] == ("0644", "root:root")
        ca = x509.load_pem_x509_certificate(files[TLS_CA][2].encode())
        cert = x509.load_pem_x509_certificate(files[TLS_CERT][2].encode())
        key = serialization.load_pem_private_key(files[TLS_KEY][2].encode(), None)
        cert.verify_directly_issued_by(ca)
        assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        assert "GlusterFS" in _cn(ca) and files[TLS_CA][2] != db_ca  # not MariaDB's CA
        assert _cn(cert) == f"do-ha-stack-staging-{node}"
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address(addresses["privateIpv4"])]
        assert key.public_key().public_numbers() == cert.public_key().public_numbers()
        keys.add(files[TLS_KEY][2])
    assert len(keys) == len(staging.outputs["nodes"])  # a key per node


def test_the_bricks_admit_exactly_the_members_certificate_names(staging: Run) -> None:
    plan = _plan(staging)
    names = {_cn(x509.load_pem_x509_certificate(bundle_files(plan[f"{n}-cluster-node"]["stdin"])[TLS_CERT][2]
                                                .encode())) for n in staging.outputs["nodes"]}
    _, args = passed_args(plan["storage-volume"]["create"])
    assert set(args["TLS_ALLOW"].split(",")) == names and len(names) == 3
    for node in ("app1", "app2"):
        _, mount = passed_args(plan[f"{node}-shared-mount"]["create"])
        assert mount["TLS"] == "yes"
