"""HTTPS on real nodes.

With a supplied certificate: a running HTTP-only stack gets a
domain and its certificate in the config; the next `up` reaches every app node
(web-node only, no droplet replaced); a client that trusts only the lab's CA
verifies the site on the reserved IP and on each node (so a failover serves the
same certificate); HTTP redirects to HTTPS; testssl.sh, from the lab's public
side, finds no weak protocol, cipher or vulnerability. A new certificate and key
then roll out under steady HTTPS requests with none failing, and removing the
domain takes the stack back to HTTP with the key gone from the nodes.

By ACME, against a real CA (pebble, lab.acme): a domain alone obtains a
certificate once per stack through the reserved IP, every node serves it, a
renewal on the node holding the IP reaches the others by their sync timer, the
active role moves and the other node serves the renewed certificate, and a
re-key (make rekey-site) replaces the certificate and revokes the old one, and a
failover while the holder renews leaves the survivor serving a valid certificate,
and renewing itself once GlusterFS releases the dead node's certbot lock."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509

from infra import tuning
from infra.web import TLS_DIR
from lab import replay
from lab.acme import pebble
from lab.stack import config_set, lab_config, lab_nodes, lab_plan
from lab.topology import RESERVED_IP, SWITCH_NS, LabNode, run_dir
from tests.helpers.certs import CA, cert_pem
from tests.helpers.day2 import host, lab_health, lab_run_on
from lab.containers import kill_node
from tests.helpers.lab_support import Admin, api, in_lab
from tests.lab.test_lab_cluster import _promoted, _settled, _wait
from tests.lab.test_lab_switchover import _holder as holder_by_api
from tooling.node_ops import Operations
from tooling.site_rekey import rekey
from tooling.switchover import switch

pytestmark = pytest.mark.lab

DOMAIN = "www.lab.example"
TLS_SETTINGS = ("domain", "tlsCertificate", "tlsPrivateKey")
# testssl.sh findings that say what the lab's private CA lacks, not what the
# stack serves: no revocation URL (the CA publishes none), no CAA record (the
# lab has no DNS), an "untrusted" chain before --add-ca is read, no CT logs.
LAB_CA_FINDINGS = {"cert_crlDistributionPoints", "cert_ocspURL", "cert_revocation", "DNS_CAArecord",
                   "cert_certificateTransparency", "OCSP_stapling"}


def _up() -> set[str]:
    ran: dict[str, dict] = {}
    replay.replay_all(lab_plan(lab_nodes()), record=ran)
    return set(ran)


def _eventually(what: str, check: Callable[[], bool], seconds: float = 15) -> None:
    """nginx applies a reload in the background (systemctl reload only signals it)."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.5)


def _web_steps(nodes: list[LabNode]) -> set[str]:
    return {f"{n.name}-web-node" for n in nodes if n.name != "witness"}


def _serial(ip: str) -> int:
    """The serial of the certificate served at ip:443 for the domain (0: none)."""
    out = in_lab("bash", "-c", f"openssl s_client -connect {ip}:443 -servername {DOMAIN} </dev/null 2>/dev/null"
                               " | openssl x509 -noout -serial").stdout.strip()
    return int(out.removeprefix("serial="), 16) if out.startswith("serial=") else 0


def _serves(serial: int, ips: list[str]) -> bool:
    return all(_serial(ip) == serial for ip in ips)


def _get(url: str, ca_file: Path, ip: str = RESERVED_IP, *curl: str) -> subprocess.CompletedProcess[str]:
    host_port = "443" if url.startswith("https") else "80"
    return in_lab("curl", "-sS", "-m", "5", "--cacert", str(ca_file), "--resolve", f"{DOMAIN}:{host_port}:{ip}",
                  "-o", "/dev/null", "-D", "-", "-w", "\ncode=%{http_code} verify=%{ssl_verify_result}", *curl, url)


def _requests_during(seconds: int, ca_file: Path) -> subprocess.Popen[str]:
    """Verified HTTPS GETs of the primary's health through the reserved IP, back to
    back, for `seconds`: prints 'ok N bad M' (bad: anything but 200), then what each
    bad one was (its time, HTTP code and curl's exit), so a failure says why."""
    loop = (f"end=$((SECONDS+{seconds})); ok=0; bad=0; why=; while ((SECONDS<end)); do "
            f"code=$(curl -s -m 3 -o /dev/null -w '%{{http_code}}' --cacert {ca_file} "
            f"--resolve {DOMAIN}:443:{RESERVED_IP} https://{DOMAIN}/canary/health); rc=$?; "
            'if [ "$code" = 200 ]; then ok=$((ok+1)); else bad=$((bad+1)); '
            'why="$why $(date +%T.%N | cut -c1-12)/http=$code/curl=$rc"; fi; '
            'sleep 0.05; done; echo ok $ok bad $bad; echo "bad requests:$why"')
    return subprocess.Popen(["ip", "netns", "exec", SWITCH_NS, "bash", "-c", loop], stdout=subprocess.PIPE,
                            text=True)


def _testssl(ca_file: Path) -> list[dict]:
    report = run_dir() / "testssl.json"
    report.unlink(missing_ok=True)
    result = in_lab("testssl", "--quiet", "--color", "0", "--warnings", "batch", "--ip", RESERVED_IP,
                    "--add-ca", str(ca_file), "--jsonfile", str(report), f"https://{DOMAIN}/",
                    timeout=600)  # from the switch: the internet's side, where the reserved IP is routed
    assert report.exists(), result.stdout[-2000:] + result.stderr[-2000:]
    return json.loads(report.read_text())


def test_a_supplied_certificate_is_served_everywhere_and_rotates_without_a_failed_request(
        nodes: list[LabNode]) -> None:
    ca = CA.new("do-ha-stack lab CA")
    ca_file = run_dir() / "lab-ca.pem"
    ca_file.write_text(cert_pem(ca.cert))
    apps_ = [n for n in nodes if n.name != "witness"]
    ids = [n.droplet_id for n in lab_nodes()]
    chain, key = ca.site([DOMAIN])
    try:
        config_set("domain", DOMAIN)
        config_set("tlsCertificate", chain)
        config_set("tlsPrivateKey", key)
        assert _up() == _web_steps(nodes)
        _eventually("HTTPS on the reserved IP", lambda: _get(f"https://{DOMAIN}/", ca_file).returncode == 0)

        served = _get(f"https://{DOMAIN}/canary/health", ca_file)  # the primary's canary, verified
        assert served.stdout.endswith("code=200 verify=0"), served.stdout + served.stderr
        assert re.search(r"(?im)^strict-transport-security: max-age=63072000\s*$", served.stdout)
        for node in apps_:  # whichever node the reserved IP reaches serves the same, valid certificate
            page = _get(f"https://{DOMAIN}/no-such-page", ca_file, node.public_ip).stdout
            assert page.endswith("code=404 verify=0"), (node.name, page)
            assert Admin(node).sudo(f"stat -c '%a %U' {TLS_DIR}/site.key").stdout.strip() == "600 root"
        redirect = _get(f"http://{DOMAIN}/canary/write?x=1", ca_file)
        assert "code=301" in redirect.stdout
        assert re.search(rf"(?im)^location: https://{re.escape(DOMAIN)}/canary/write\?x=1\s*$", redirect.stdout)
        old_tls = _get(f"https://{DOMAIN}/", ca_file, RESERVED_IP, "--tlsv1.1", "--tls-max", "1.1")
        assert "code=000" in old_tls.stdout, old_tls.stdout  # TLS 1.1 refused

        findings = _testssl(ca_file)
        (run_dir() / "testssl-findings.txt").write_text(
            "".join(f"{f['id']} {f['severity']} {f['finding']}\n" for f in findings))
        weak = [f for f in findings if f["severity"] in ("MEDIUM", "HIGH", "CRITICAL", "FATAL")
                and f["id"] not in LAB_CA_FINDINGS]
        assert not weak, weak
        found = {f["id"]: f["finding"] for f in findings}
        assert found.get("TLS1_3", "").startswith("offered") and found.get("TLS1_2", "").startswith("offered"), found
        offered = {f["id"] for f in findings if f["id"] in ("SSLv2", "SSLv3", "TLS1", "TLS1_1")
                   and f["finding"].startswith("offered")}
        assert not offered, offered

        # Key rotation: a new key and certificate while clients keep requesting.
        new_chain, new_key = ca.site([DOMAIN])
        new = x509.load_pem_x509_certificate(new_chain.encode()).serial_number
        assert _serial(RESERVED_IP) not in (0, new)
        requests = _requests_during(25, ca_file)
        config_set("tlsCertificate", new_chain)
        config_set("tlsPrivateKey", new_key)
        assert _up() == _web_steps(nodes)
        summary, why = requests.communicate(timeout=60)[0].split("\n", 1)
        counts = summary.split()
        assert counts[0] == "ok" and int(counts[1]) > 50 and counts[2:] == ["bad", "0"], (counts, why)
        _eventually("the new certificate on every node", lambda: _serves(new, [n.public_ip for n in apps_]))
        assert [n.droplet_id for n in lab_nodes()] == ids  # no droplet was replaced
    finally:
        for setting in TLS_SETTINGS:
            config_set(setting, None)
        _up()
    for node in apps_:
        assert Admin(node).sudo(f"test -e {TLS_DIR}", check=False).returncode != 0, node.name  # the key is gone
    _eventually("plain HTTP again", lambda: "code=200" in _get(f"http://{DOMAIN}/canary/health", ca_file).stdout)


def _acme_steps(nodes: list[LabNode]) -> set[str]:
    return _web_steps(nodes) | {"site-certificate"} | {f"{n.name}-site-tls" for n in nodes if n.name != "witness"}


def _holder(nodes: list[LabNode]) -> LabNode:
    """The app node pacemaker runs the reserved IP on."""
    where = Admin(nodes[0]).sudo("crm_resource --resource reserved-ip --locate").stdout
    return next(n for n in nodes if n.name != "witness" and where.strip().endswith(f"-{n.name}"))


@pytest.mark.disruptive(order=1)  # it moves the active role
def test_acme_gets_a_certificate_once_serves_it_everywhere_and_a_renewal_reaches_every_node(
        nodes: list[LabNode], report: dict) -> None:
    apps_ = [n for n in nodes if n.name != "witness"]
    # Each pebble start is a new CA at the same URL: certificates from an earlier run
    # on this lab would be kept (not due) yet chain to a root nobody trusts any more.
    Admin(apps_[0]).sudo("rm -rf /srv/shared/tls /srv/shared/acme")
    with pebble() as ca:
        try:
            config_set("domain", DOMAIN)
            config_set("acmeDirectoryUrl", ca.directory_url)
            config_set("acmeServerCa", ca.server_ca)
            assert _up() == _acme_steps(nodes)
            roots = run_dir() / "pebble-roots.pem"
            roots.write_text(ca.issuing_roots())  # a client that trusts only pebble's root
            _eventually("a verified certificate on the reserved IP",
                        lambda: _get(f"https://{DOMAIN}/", roots).stdout.endswith("verify=0"))

            served = _get(f"https://{DOMAIN}/canary/health", roots)
            assert served.stdout.endswith("code=200 verify=0"), served.stdout + served.stderr
            first = _serial(RESERVED_IP)
            _eventually("the same certificate on every node", lambda: _serves(first, [n.public_ip for n in apps_]))
            for node in apps_:  # whichever node the reserved IP goes to serves it, valid
                page = _get(f"https://{DOMAIN}/no-such-page", roots, node.public_ip).stdout
                assert page.endswith("code=404 verify=0"), (node.name, page)
                assert Admin(node).sudo(f"stat -c '%a %U' {TLS_DIR}/site.key").stdout.strip() == "600 root"
                assert Admin(node).sudo("systemctl is-active do-ha-site-cert-sync.timer "
                                        "do-ha-site-cert-renew.timer").stdout.split() == ["active", "active"]
            assert _up() == set()  # obtained once: the next up has nothing to do

            # A renewal (forced: pebble's certificates are far from due) on the node
            # that renews, with HTTPS requests running through the reserved IP.
            holder = _holder(nodes)
            others = [n for n in apps_ if n != holder]
            current = f"readlink -f /srv/shared/tls/letsencrypt/live/{DOMAIN}/cert.pem"
            before = Admin(holder).sudo(current).stdout
            assert Admin(others[0]).sudo("/usr/local/lib/do-ha-stack/site-cert renew --force-renewal"
                                         ).returncode == 0
            assert Admin(holder).sudo(current).stdout == before  # a node without the IP renews nothing
            requests = _requests_during(20, roots)
            Admin(holder).sudo("/usr/local/lib/do-ha-stack/site-cert renew --force-renewal", timeout=120)
            _eventually("the renewed certificate on the reserved IP", lambda: _serial(RESERVED_IP) not in (0, first))
            renewed = _serial(RESERVED_IP)
            summary, why = requests.communicate(timeout=60)[0].split("\n", 1)
            counts = summary.split()
            assert counts[2:] == ["bad", "0"] and int(counts[1]) > 20, (counts, why)
            # The others pick it up from the shared volume by their sync timer.
            _eventually("the renewed certificate on the other nodes",
                        lambda: _serves(renewed, [n.public_ip for n in others]), tuning.SITE_CERT_SYNC_S + 30)

            # The active role moves (a planned switchover): the other node serves the
            # renewed certificate through the reserved IP.
            ops = Operations(lab_health, lab_run_on, say=print,
                             pulumi=lambda argv: pytest.fail(f"no pulumi in a switchover: {argv}"))
            switch(lab_config().stack, {n.name: host(n) for n in apps_}, ops)
            holder = _holder(lab_nodes())
            assert holder in others
            after = _get(f"https://{DOMAIN}/canary/health", roots)
            assert after.stdout.endswith("code=200 verify=0") and _serial(RESERVED_IP) == renewed, after.stdout

            # Re-keying (make rekey-site): a new key and certificate at once, the old one
            # revoked, on the node holding the reserved IP.
            assert rekey(lab_config(), ops).healthy
            _eventually("the re-keyed certificate on the reserved IP",
                        lambda: _serial(RESERVED_IP) not in (0, renewed))
            assert ca.revoked(renewed) and not ca.revoked(_serial(RESERVED_IP))

            # A failover while the holder renews: the survivor serves a valid
            # certificate at once and renews itself; the fenced node is powered on.
            victim = _holder(lab_nodes())
            survivor = next(n for n in apps_ if n != victim)
            def renew_until_killed() -> None:
                with contextlib.suppress(subprocess.TimeoutExpired):  # the node dies under it
                    Admin(victim).sudo("/usr/local/lib/do-ha-stack/site-cert renew --force-renewal",
                                       check=False, timeout=60)

            threading.Thread(target=renew_until_killed, daemon=True).start()
            time.sleep(1.5)  # certbot is talking to the CA
            killed_at = time.monotonic()
            kill_node(victim)
            _wait("HTTPS through the reserved IP on the survivor", 120,
                  lambda: holder_by_api(apps_) == survivor
                  and _get(f"https://{DOMAIN}/canary/health", roots).stdout.endswith("code=200 verify=0"))
            report.setdefault("https", {})["failover_during_renewal_to_verified_https_s"] = round(
                time.monotonic() - killed_at, 1)
            # certbot's lock on the shared volume is the dead node's until GlusterFS gives
            # up on it (its ping timeout): the renewal goes through once it does.
            renewed_at: list[float] = []

            def renews() -> bool:
                done = Admin(survivor).sudo("/usr/local/lib/do-ha-stack/site-cert renew --force-renewal",
                                            check=False, timeout=180)
                if done.returncode != 0:
                    assert "Another instance of Certbot is already running" in done.stderr, done.stderr[-1500:]
                    return False
                renewed_at.append(time.monotonic() - killed_at)
                return True

            _eventually("the survivor renews", renews, 150)
            report["https"]["failover_during_renewal_lock_released_s"] = round(renewed_at[0], 1)
            status, body = api("POST", f"/v2/droplets/{victim.droplet_id}/actions", {"type": "power_on"})
            assert status == 201, body
            _wait(f"{victim.name} back", 300, lambda: _settled(lab_nodes()))
            latest = _serial(survivor.public_ip)
            try:
                _wait(f"{victim.name} serving the survivor's renewal", tuning.SITE_CERT_SYNC_S * 2 + 30,
                      lambda: _serial(victim.public_ip) == latest)
            except BaseException:
                print(Admin(victim).sudo(
                    "bash -c \"systemctl list-timers --all 'do-ha-*'; systemctl status --no-pager"
                    " do-ha-site-cert-sync.timer do-ha-site-cert-sync.service srv-shared.mount;"
                    " journalctl -b --no-pager -o short-monotonic -u do-ha-site-cert-sync.service"
                    " -u do-ha-site-cert-sync.timer -u srv-shared.mount -u glusterd -t do-ha-site-cert"
                    " | tail -80; uptime; ls -l /etc/nginx/sites-enabled/\"", check=False).stdout)
                raise
        finally:
            for setting in ("domain", "acmeDirectoryUrl", "acmeServerCa"):
                config_set(setting, None)
            _up()
            # The later disruptive tests start from the bootstrap node as the primary.
            _wait("a settled cluster", 300, lambda: _settled(lab_nodes()))
            if _promoted(lab_nodes()) != apps_[0]:
                switch(lab_config().stack, {n.name: host(n) for n in apps_}, Operations(
                    lab_health, lab_run_on, say=print, pulumi=lambda argv: pytest.fail(f"no pulumi: {argv}")),
                    to=apps_[0].name)
    for node in apps_:
        assert Admin(node).sudo("systemctl is-enabled do-ha-site-cert-sync.timer", check=False).returncode != 0
        assert Admin(node).sudo(f"test -e {TLS_DIR}", check=False).returncode != 0, node.name
