"""Pulumi type tokens of the resources the program creates, as the engine names them.

One definition for the offline tooling, the policy pack and the tests.
"""

DROPLET = "digitalocean:index/droplet:Droplet"
VPC = "digitalocean:index/vpc:Vpc"
FIREWALL = "digitalocean:index/firewall:Firewall"
TAG = "digitalocean:index/tag:Tag"
SSH_KEY = "digitalocean:index/sshKey:SshKey"
RESERVED_IP = "digitalocean:index/reservedIp:ReservedIp"
RESERVED_IP_ASSIGNMENT = "digitalocean:index/reservedIpAssignment:ReservedIpAssignment"
MONITOR_ALERT = "digitalocean:index/monitorAlert:MonitorAlert"
PROJECT = "digitalocean:index/project:Project"
UPTIME_CHECK = "digitalocean:index/uptimeCheck:UptimeCheck"
UPTIME_ALERT = "digitalocean:index/uptimeAlert:UptimeAlert"
DNS_RECORD = "digitalocean:index/dnsRecord:DnsRecord"
SPACES_BUCKET = "digitalocean:index/spacesBucket:SpacesBucket"
SPACES_KEY = "digitalocean:index/spacesKey:SpacesKey"
REMOTE_COMMAND = "command:remote:Command"
TLS_PRIVATE_KEY = "tls:index/privateKey:PrivateKey"
TLS_SELF_SIGNED_CERT = "tls:index/selfSignedCert:SelfSignedCert"
TLS_CERT_REQUEST = "tls:index/certRequest:CertRequest"
TLS_LOCALLY_SIGNED_CERT = "tls:index/locallySignedCert:LocallySignedCert"
RANDOM_PASSWORD = "random:index/randomPassword:RandomPassword"
RANDOM_ID = "random:index/randomId:RandomId"

# Never protected, on prod either: the program re-derives them by replacement
# (certificates renew, a replaced node's commands re-run); see infra/naming.derived_opts.
REPLACED_BY_DESIGN = frozenset({TLS_SELF_SIGNED_CERT, TLS_CERT_REQUEST, TLS_LOCALLY_SIGNED_CERT, REMOTE_COMMAND})
