"""Effective sshd values every node must show (`sshd -T`), shared by the tool and lab tiers."""

EXPECTED_SSHD = {
    "permitrootlogin": "no",
    "passwordauthentication": "no",
    "kbdinteractiveauthentication": "no",
    "permitemptypasswords": "no",
    "pubkeyauthentication": "yes",
    "authenticationmethods": "publickey",
    "allowusers": "deploy",
    "maxauthtries": "3",
    "allowtcpforwarding": "no",
    "allowagentforwarding": "no",
    "allowstreamlocalforwarding": "no",
    "x11forwarding": "no",
    "permittunnel": "no",
    "permituserenvironment": "no",
    "loglevel": "VERBOSE",
    "banner": "/etc/issue.net",
    "compression": "no",
    "tcpkeepalive": "no",
    "hostkeyalgorithms": "ssh-ed25519,ssh-ed25519-cert-v01@openssh.com",
    "ciphers": "chacha20-poly1305@openssh.com,aes256-gcm@openssh.com,aes128-gcm@openssh.com,"
               "aes256-ctr,aes192-ctr,aes128-ctr",
    "macs": "hmac-sha2-512-etm@openssh.com,hmac-sha2-256-etm@openssh.com,umac-128-etm@openssh.com",
}


def parse_sshd_t(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        values.setdefault(key, value)
    return values
