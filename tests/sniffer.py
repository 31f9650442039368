"""What crosses a lab link, seen from the root namespace's end of a host's veth.

:class:`StreamSniffer` reads every frame on the veth (an ``AF_PACKET`` socket, root only)
and looks at TCP segments to or from QEMU's migration ports (libvirt's default range,
49152-49215): how many payload bytes passed, how many segments began a plaintext QEMU
migration stream (its magic, ``QEVM``, at the start of a payload) and how many began a TLS
handshake record (0x16 0x03). A plaintext stream shows the magic; an encrypted one never
does (a random match at a payload's start is a 1 in 2^32 chance per segment).
"""

from __future__ import annotations

import errno
import socket
import struct
import threading
from types import TracebackType

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
MIGRATION_PORTS = range(49152, 49216)
QEMU_MAGIC = b"QEVM"
TLS_HANDSHAKE = b"\x16\x03"
SO_RCVBUFFORCE = 33
RECEIVE_BUFFER_BYTES = 64 * 2**20


class StreamSniffer:
    def __init__(self, iface: str) -> None:
        self.iface = iface
        self.payload_bytes = 0
        self.plaintext_starts = 0
        self.tls_handshakes = 0
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        # room for bursts while this thread waits for the GIL (root may exceed rmem_max)
        self._sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER_BYTES)
        self._sock.bind((iface, 0))
        self._sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._read, name=f"sniff-{iface}", daemon=True)

    def __enter__(self) -> StreamSniffer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self._sock.close()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                frame = self._sock.recv(262144)
            except TimeoutError:
                continue
            except OSError as err:
                if err.errno != errno.ENETDOWN:
                    return  # the link is gone (lab down)
                continue  # a cut link: the socket reports it once, and sees it come back
            self._look(frame)

    def _look(self, frame: bytes) -> None:
        if len(frame) < 34 or struct.unpack("!H", frame[12:14])[0] != ETH_P_IP:
            return
        ip = frame[14:]
        if ip[9] != socket.IPPROTO_TCP:
            return
        tcp = ip[(ip[0] & 0x0F) * 4 :]
        if len(tcp) < 20:
            return
        sport, dport = struct.unpack("!HH", tcp[:4])
        if sport not in MIGRATION_PORTS and dport not in MIGRATION_PORTS:
            return
        payload = tcp[(tcp[12] >> 4) * 4 :]
        self.payload_bytes += len(payload)
        if payload.startswith(QEMU_MAGIC):
            self.plaintext_starts += 1
        elif payload.startswith(TLS_HANDSHAKE):
            self.tls_handshakes += 1
