"""A network namespace of the end-to-end tests' own, which the local cluster and everything that
talks to it run in.

The API server refuses loopback addresses in Endpoints and EndpointSlices, so a component that
finds pods through them (the Endpoint Picker, the API server's own aggregation routing) needs the
pods at other addresses, and something must answer there: the fake vLLM servers of the tests.
Traffic to such addresses stays inside a namespace the tests made: its ``lo`` holds the pod
network (kwok's --cidr) as a local range (``ip route add local``, which makes every address of
the range an address of this host, so a fake can bind any pod's IP), and nothing in it has a
route elsewhere.

``enter()`` moves the calling thread, the test's main thread, into a new namespace (unshare(2)
with CLONE_NEWNET, as root); the processes and threads it starts from then on are inside it. A
command that must reach the package registries (pip) runs with ``preexec_fn=outside``.
"""

from __future__ import annotations

import ctypes
import os
import subprocess

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL("libc.so.6", use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


class NetworkNamespace:
    def __init__(self, local_ranges: list[str]):
        self.local_ranges = local_ranges
        self._host: int | None = None

    def enter(self) -> None:
        self._host = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET) (the end-to-end tests run as root)")
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=10)
        for cidr in self.local_ranges:
            subprocess.run(["ip", "route", "add", "local", cidr, "dev", "lo"], check=True, timeout=10)

    def outside(self) -> None:
        """For preexec_fn: the child process leaves for the host's network namespace."""
        if self._host is not None:
            _check(_libc.setns(self._host, CLONE_NEWNET), "setns to the host's network namespace")

    def leave(self) -> None:
        """The main thread goes back; the namespace ends with the last process inside it."""
        if self._host is not None:
            self.outside()
            os.close(self._host)
            self._host = None


CURRENT: NetworkNamespace | None = None
"""The namespace the session's cluster runs in, once it started."""


def outside() -> None:
    """For preexec_fn of a command that needs the package registries."""
    if CURRENT is not None:
        CURRENT.outside()
