"""The node's network, set up the way a CNI plugin and a node image would:

* a port-less bridge ``dockyard0`` holding the node IP (the kernel here has no ``dummy``
  driver; a bridge without ports behaves the same: local address, drops what it is sent). Nothing outside this machine routes
  to it, so listeners on it are as private as loopback, yet Pods (in their own network
  namespaces) can reach it, which they cannot do for 127.0.0.1;
* the Service and Pod CIDRs routed into that dummy interface, where packets are dropped: a
  ClusterIP that kube-proxy has not (yet) rewritten, or a Pod IP without a Pod, never leaves
  the machine through the default route;
* one network namespace per Pod with a veth pair; the Pod side is ``eth0`` with the Pod IP
  (a /32), the host side has proxy ARP and a /32 route to the Pod (Calico's layout: all Pod
  traffic is routed by the host, so kube-proxy's DNAT and conntrack see both directions);
* an nftables table ``dockyard-node`` that drops anything a Pod sends towards an interface
  that is not another Pod: Pods talk to Pods, Services and the node, never to the network.

All of it needs root (CAP_NET_ADMIN). ``teardown`` removes every piece.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

DUMMY = "dockyard0"
VETH_PREFIX = "dyv"
NETNS_PREFIX = "dy-"
NFT_TABLE = "dockyard-node"


@dataclass(frozen=True)
class NetworkLayout:
    node_ip: str = "10.245.0.1"
    pod_cidr: str = "10.244.0.0/16"
    service_cidr: str = "10.96.0.0/16"
    cluster_domain: str = "cluster.local"

    @property
    def api_service_ip(self) -> str:
        return str(ipaddress.ip_network(self.service_cidr)[1])

    @property
    def dns_service_ip(self) -> str:
        return str(ipaddress.ip_network(self.service_cidr)[10])


def _ip(*args: str, check: bool = True, netns: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", *(["-n", netns] if netns else []), *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=check)


def can_manage_network() -> bool:
    return os.geteuid() == 0


def setup_node(layout: NetworkLayout) -> None:
    """Idempotent: create what is missing."""
    if _ip("link", "show", DUMMY, check=False).returncode != 0:
        _ip("link", "add", DUMMY, "type", "bridge")
    _ip("link", "set", DUMMY, "up")
    if layout.node_ip not in _ip("-4", "addr", "show", DUMMY).stdout:
        _ip("addr", "add", f"{layout.node_ip}/32", "dev", DUMMY)
    for cidr in (layout.service_cidr, layout.pod_cidr):
        _ip("route", "replace", cidr, "dev", DUMMY)
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1")
    ruleset = f"""
table inet {NFT_TABLE} {{
  chain forward {{
    type filter hook forward priority filter; policy accept;
    iifname "{VETH_PREFIX}*" oifname != "{VETH_PREFIX}*" drop
  }}
}}
"""
    subprocess.run(["nft", "delete", "table", "inet", NFT_TABLE], capture_output=True)
    subprocess.run(["nft", "-f", "-"], input=ruleset, text=True, check=True, capture_output=True)


def delete_all_pod_networks() -> None:
    for name in list_pod_netns():
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)
    for line in _ip("-o", "link", "show", check=False).stdout.splitlines():
        ifname = line.split(":")[1].strip().split("@")[0]
        if ifname.startswith(VETH_PREFIX):
            _ip("link", "delete", ifname, check=False)
    for line in _ip("-4", "route", "show", "proto", "boot", check=False).stdout.splitlines():
        if " dev " + VETH_PREFIX in line:
            _ip("route", "delete", line.split()[0], check=False)


def teardown_node() -> None:
    """Remove Pod namespaces, veths, routes, the dummy interface and nftables tables
    (ours and kube-proxy's)."""
    delete_all_pod_networks()
    _ip("link", "delete", DUMMY, check=False)
    for family, table in (("inet", NFT_TABLE), ("ip", "kube-proxy"), ("ip6", "kube-proxy")):
        subprocess.run(["nft", "delete", "table", family, table], capture_output=True)


def list_pod_netns() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(NETNS_PREFIX)]


def pod_names(uid: str) -> tuple[str, str]:
    """(netns name, host-side veth name) for a Pod uid; IFNAMSIZ allows 15 characters."""
    short = hashlib.sha256(uid.encode()).hexdigest()[:10]
    return f"{NETNS_PREFIX}{short}", f"{VETH_PREFIX}{short}"


def create_pod_network(uid: str, pod_ip: str) -> str:
    """A network namespace for the Pod with ``lo`` and ``eth0`` = ``pod_ip``; returns its name."""
    netns, host_if = pod_names(uid)
    if netns not in list_pod_netns():
        _ip("netns", "add", netns)
    if _ip("link", "show", host_if, check=False).returncode != 0:
        _ip("link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", netns)
    Path(f"/proc/sys/net/ipv4/conf/{host_if}/proxy_arp").write_text("1")
    _ip("link", "set", host_if, "up")
    _ip("route", "replace", f"{pod_ip}/32", "dev", host_if)
    _ip("link", "set", "lo", "up", netns=netns)
    if pod_ip not in _ip("-4", "addr", "show", "eth0", netns=netns).stdout:
        _ip("addr", "add", f"{pod_ip}/32", "dev", "eth0", netns=netns)
    _ip("link", "set", "eth0", "up", netns=netns)
    # A link-scoped gateway: the host answers ARP for it (proxy_arp) and routes everything.
    _ip("route", "replace", "169.254.1.1", "dev", "eth0", "scope", "link", netns=netns)
    _ip("route", "replace", "default", "via", "169.254.1.1", "dev", "eth0", netns=netns)
    return netns


def delete_pod_network(uid: str, pod_ip: str | None) -> None:
    netns, host_if = pod_names(uid)
    if pod_ip:
        _ip("route", "delete", f"{pod_ip}/32", check=False)
    _ip("link", "delete", host_if, check=False)
    subprocess.run(["ip", "netns", "delete", netns], capture_output=True)
