"""The lab's network: one bridge, one network namespace and veth pair per host, tc shaping.

Layout (host *n* of the lab)::

    root namespace                          namespace hN
    orbitbr0 198.18.0.254/24 --- orbit-hN <==veth==> eth0 198.18.0.n/24

The bridge holds an address in the lab range, so a packet for 198.18.0.0/24 from the root
namespace goes to the bridge and never through the default route. Shaping (rate, delay,
loss) applies to traffic into and out of the host, each direction on its own: see
:class:`Shaping`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from orbit.errors import ConfigError, LabError
from orbit.lab.system import run, wait_for

BRIDGE = "orbitbr0"
SUBNET_PREFIX = "198.18.0."
PREFIX_LEN = 24
BRIDGE_HOST_OCTET = 254
NS_IFACE = "eth0"
MIN_RATE_BITS_S = 1_000_000
TBF_MIN_BURST_BYTES = 64 * 1024
TBF_LATENCY_MS = 100
_RATE_UNITS = {"bit": 1, "kbit": 1_000, "mbit": 1_000_000, "gbit": 1_000_000_000}

_RATE_RE = re.compile(r"^\d+(\.\d+)?(bit|kbit|mbit|gbit)$")
_DELAY_RE = re.compile(r"^\d+(\.\d+)?(us|ms|s)$")
_LOSS_RE = re.compile(r"^\d+(\.\d+)?%$")


def host_address(index: int) -> str:
    return f"{SUBNET_PREFIX}{index}"


def veth_name(host: str) -> str:
    return f"orbit-{host}"


def link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def netns_exists(name: str) -> bool:
    return Path(f"/run/netns/{name}").exists()


def create_bridge() -> None:
    run(["ip", "link", "add", BRIDGE, "type", "bridge"])
    run(["ip", "addr", "add", f"{host_address(BRIDGE_HOST_OCTET)}/{PREFIX_LEN}", "dev", BRIDGE])
    run(["ip", "link", "set", BRIDGE, "up"])


def delete_bridge() -> None:
    if link_exists(BRIDGE):
        run(["ip", "link", "del", BRIDGE])


#: Each lab host's TCP gives up on a connection whose data stays unacknowledged for
#: ~12.6 s (RTO 0.2 s doubled: 0.2+0.4+...+6.4 s), not the kernel's ~15 minutes, as an
#: operator sets it on a migration network. After a long link cut, a daemon's dead
#: connection then ends on both sides before the link returns: no stale call (libvirt's
#: Finish of the broken job, which held the destination's domain lock for 30 s when TCP
#: delivered it after a 20 s cut) arrives late, and the destination notices the break.
#: A connection its program closed (an orphan) retries as long: not less, or the FIN of
#: the source's end of QEMU's stream, closed by a pause while the link was down, is
#: given up before the link returns and a destination with nothing in flight waits on
#: that half-open connection for ever (seen with 2: ~1.4 s, on a flapping link). The
#: namespaces' own values: the machine's are untouched.
TCP_SYSCTLS = {"net.ipv4.tcp_retries2": 5, "net.ipv4.tcp_orphan_retries": 5}

#: Where libvirt cannot resume a post-copy (11.2 and later), QEMU's own stream has to
#: outlive the outage and get through soon after it: retransmit at least every second, not
#: up to every 2 min (``tcp_rto_max_ms``, Linux 6.15 and later), for ~4.2 min (255
#: retransmissions; 15 at that pace gave up within a 60 s cut). 2000 ms lived ~8.4 min but
#: a 3 s cut flowed again only 2.3 s after the link returned. Without that sysctl the
#: kernel's defaults stay (~15 min; the stream goes on up to 2 min after the link returns).
TCP_SYSCTLS_UNRESUMABLE = {"net.ipv4.tcp_rto_max_ms": 1000, "net.ipv4.tcp_retries2": 255}


def create_host_net(host: str, index: int) -> None:
    """Create namespace ``host`` joined to the bridge, with address 198.18.0.``index``."""
    veth = veth_name(host)
    run(["ip", "netns", "add", host])
    run(["ip", "link", "add", veth, "type", "veth", "peer", "name", NS_IFACE, "netns", host])
    run(["ip", "link", "set", veth, "master", BRIDGE, "up"])
    run(["ip", "-n", host, "addr", "add", f"{host_address(index)}/{PREFIX_LEN}", "dev", NS_IFACE])
    run(["ip", "-n", host, "link", "set", NS_IFACE, "up"])
    run(["ip", "-n", host, "link", "set", "lo", "up"])


def tune_tcp(host: str, *, resumable: bool) -> dict[str, int]:
    """Set the TCP settings for the host's namespace (they apply to open sockets too):
    :data:`TCP_SYSCTLS` where post-copy can be resumed, else
    :data:`TCP_SYSCTLS_UNRESUMABLE` if this kernel has them. Returns what was set."""
    wanted = TCP_SYSCTLS if resumable else TCP_SYSCTLS_UNRESUMABLE
    if not resumable and not Path("/proc/sys/net/ipv4/tcp_rto_max_ms").exists():
        wanted = {}
    for key, value in wanted.items():
        run(["ip", "netns", "exec", host, "sysctl", "-q", "-w", f"{key}={value}"])
    return wanted


def delete_host_net(host: str) -> None:
    """Remove the host's namespace and veth; each step tolerates what is already gone."""
    if netns_exists(host):
        run(["ip", "netns", "del", host])
    veth = veth_name(host)
    # Deleting the namespace takes the veth pair with it, asynchronously: tolerate a race.
    if link_exists(veth):
        run(["ip", "link", "del", veth], check=False)
        wait_for(lambda: not link_exists(veth), f"veth {veth} to disappear")


@dataclass(frozen=True)
class Shaping:
    """Link settings for one host; None leaves that aspect unshaped.

    Each applies to both directions of the host's link, separately:

    - ``rate``: a token bucket (``tbf``) on both ends of the veth;
    - ``loss``: random drops by iptables' ``statistic`` match on INPUT and OUTPUT inside
      the host's namespace;
    - ``delay``: a ``netem`` qdisc, only where the kernel has sch_netem (many minimal
      kernels, such as this project's CI machines, do not: the lab then says so).
    """

    rate: str | None = None
    delay: str | None = None
    loss: str | None = None

    def validate(self) -> None:
        for value, pattern, flag, example in (
            (self.rate, _RATE_RE, "--rate", "400mbit"),
            (self.delay, _DELAY_RE, "--delay", "1ms"),
            (self.loss, _LOSS_RE, "--loss", "0.1%"),
        ):
            if value is not None and not pattern.match(value):
                raise ConfigError(f"{flag} {value!r} is not valid (example: {example})")
        if self.loss is not None and not 0 <= float(self.loss[:-1]) < 100:
            raise ConfigError(f"--loss {self.loss!r} must be below 100%")
        if self.rate is not None and rate_bits_s(self.rate) < MIN_RATE_BITS_S:
            raise ConfigError(f"--rate {self.rate!r} is below the lab's minimum of 1mbit")

    def is_empty(self) -> bool:
        return not (self.rate or self.delay or self.loss)


def rate_bits_s(rate: str) -> int:
    """'400mbit' -> 400_000_000 (tc's units: decimal, bits per second)."""
    match = _RATE_RE.match(rate)
    if not match:
        raise ConfigError(f"--rate {rate!r} is not valid (example: 400mbit)")
    number = float(rate[: match.start(2)])
    return int(number * _RATE_UNITS[match.group(2)])


def tbf_args(rate: str) -> list[str]:
    """tbf with a bucket of 10 ms worth of bytes (at least 64 KiB) and 100 ms of queue."""
    bytes_s = rate_bits_s(rate) // 8
    burst = max(TBF_MIN_BURST_BYTES, bytes_s // 100)
    return ["tbf", "rate", rate, "burst", str(burst), "latency", f"{TBF_LATENCY_MS}ms"]


def netem_available() -> bool:
    """True if the kernel can create a netem qdisc (probed on the bridge, then removed)."""
    probe = run(
        ["tc", "qdisc", "add", "dev", BRIDGE, "root", "handle", "9:", "netem"],
        check=False,
        capture_stderr=True,
    )
    if "unknown" in probe.lower() or "no such file" in probe.lower():
        return False
    run(["tc", "qdisc", "del", "dev", BRIDGE, "root"], check=False)
    return True


def apply_shaping(host: str, shaping: Shaping) -> None:
    """Make ``host``'s link match ``shaping`` exactly (an empty Shaping removes it all)."""
    shaping.validate()
    if shaping.delay and not netem_available():
        raise LabError(
            "--delay needs the kernel's netem qdisc (CONFIG_NET_SCH_NETEM), "
            "which this kernel lacks; --rate and --loss work without it"
        )
    for ns in (None, host):
        prefix = ["-n", ns] if ns else []
        dev = NS_IFACE if ns else veth_name(host)
        run(["tc", *prefix, "qdisc", "del", "dev", dev, "root"], check=False)
        if shaping.delay:
            run(
                [
                    "tc",
                    *prefix,
                    "qdisc",
                    "add",
                    "dev",
                    dev,
                    "root",
                    "handle",
                    "1:",
                    "netem",
                    "delay",
                    shaping.delay,
                ]
            )
            if shaping.rate:
                run(
                    [
                        "tc",
                        *prefix,
                        "qdisc",
                        "add",
                        "dev",
                        dev,
                        "parent",
                        "1:1",
                        "handle",
                        "10:",
                        *tbf_args(shaping.rate),
                    ]
                )
        elif shaping.rate:
            run(["tc", *prefix, "qdisc", "add", "dev", dev, "root", *tbf_args(shaping.rate)])
    ipt = ["ip", "netns", "exec", host, "iptables", "-w"]
    for chain in ("INPUT", "OUTPUT"):
        run([*ipt, "-F", chain])
        if shaping.loss and float(shaping.loss[:-1]) > 0:
            probability = float(shaping.loss[:-1]) / 100
            run(
                [
                    *ipt,
                    "-A",
                    chain,
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    f"{probability:.6f}",
                    "-j",
                    "DROP",
                ]
            )


def set_link_up(host: str, up: bool) -> None:
    """Cut (down) or restore (up) the host's link at the root-namespace end of its veth."""
    run(["ip", "link", "set", veth_name(host), "up" if up else "down"])


def link_is_up(host: str) -> bool:
    try:
        flags = int(Path(f"/sys/class/net/{veth_name(host)}/flags").read_text(), 16)
    except (OSError, ValueError):
        return False
    return bool(flags & 0x1)  # IFF_UP


def current_shaping(host: str) -> str:
    """What shapes the host's link now, read back from the kernel: 'rate 400Mbit loss 10%'."""
    parts: list[str] = []
    qdiscs = run(["tc", "qdisc", "show", "dev", veth_name(host)], check=False)
    for word in ("delay", "rate"):
        m = re.search(rf"\b{word} (\S+)", qdiscs)
        if m:
            parts.append(f"{word} {m.group(1)}")
    rules = run(["ip", "netns", "exec", host, "iptables", "-w", "-S", "INPUT"], check=False)
    m = re.search(r"--probability (\S+)", rules)
    if m:
        parts.append(f"loss {float(m.group(1)) * 100:g}%")
    return " ".join(parts)
