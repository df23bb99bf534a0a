"""`recofast up`: the whole stack on one machine, in one command; and the simulator's stack.

It starts an embedded nats-server with JetStream (``DATA/nats``), the engine
(``recofast serve``, lists in ``DATA/lmdb``, checkpoints in ``DATA/models``) and the edge
sidecar (``recofast-sidecar`` on ``--port``), waits until the sidecar answers, and prints
the URLs. ``--events FILE`` replays a log (v1 JSON Lines or a CSV purchase log) into the
stream at ``--rate`` events per second. ``--demo`` runs a simulated shop instead: its catalog
and a generated history (``recofast simulate``: shoppers browsing, searching, carting and
buying in their favourite categories, in context) are published first, at full speed, to
warm the model; then simulated shoppers (:mod:`recofast.evaluation.shoppers`) ask the
sidecar for their lists, click, cart and buy what they are shown (with its ``rec_id``) and
browse on their own, about ``--rate`` events per second, until Ctrl-C. ``--experiment-file
FILE`` copies the file's ``[[experiments]]`` into the engine's configuration,
``DATA/recofast.toml`` (edit that file while it runs: the engine re-reads its experiments).
Ctrl-C (or SIGTERM) stops everything, engine last but one and NATS last, so the engine
checkpoints on its way out.

``--engines N --nats-nodes M`` starts the layout beyond one machine on this one: M
nats-servers in a JetStream cluster (streams replicated min(3, M) ways), N engines sharing
the event partitions (``--partitions``, default max(4, 2N)) through leases and exchanging
item deltas, each with its data in ``DATA/engine<i>``, and the sidecar as a remote edge: its
own list store (``DATA/edge``) mirrored from the KV bucket, through a leaf node when M > 1.

:func:`run_simulation` (``recofast simulate --shoppers``) starts the same stack, warms it,
and runs shoppers in lockstep rounds (see :mod:`recofast.evaluation.shoppers`), for
reproducible runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from recofast.engine.natsserver import NatsServer, _die_with_parent, start_cluster

DEMO_USERS = 500
DEMO_ITEMS = 600
DEMO_HISTORY = 20_000
"""Events of the generated history that warms the demo's model before its shoppers start."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_demo_events(path: Path, events: int = DEMO_HISTORY, users: int = DEMO_USERS, items: int = DEMO_ITEMS,
                      seed: int = 0, catalog: Path | None = None, categories: int = 12) -> int:
    """Writes simulated shop traffic (``recofast simulate``: shoppers ``shopper0``... with
    tastes, context, searches, new items) as v1 JSON Lines, and its catalog upserts to
    ``catalog``. Returns the number of events.

    >>> import json, pathlib, tempfile
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> write_demo_events(d / "demo.jsonl", events=3, catalog=d / "catalog.jsonl")
    3
    >>> sorted(json.loads((d / "demo.jsonl").read_text().splitlines()[0]))[:4]
    ['context', 'id', 'item', 'session']
    """
    from recofast.evaluation.simulate import simulate

    with open(path, "w") as f, open(catalog or os.devnull, "w") as c:
        stats = simulate(f, users=users, items=items, events=events, seed=seed, catalog=c, user_prefix="shopper",
                         categories=categories)
    return int(stats["events"])


def read_experiments(path: str | os.PathLike[str]) -> str:
    """The text of an experiment file (``[[experiments]]`` tables, see
    ``examples/demo-experiment.toml``), after checking that it is valid TOML holding
    experiments and nothing else. Raises ValueError saying what is wrong."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no such experiment file: {path}")
    text = p.read_text()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML ({e})") from None
    if not data.get("experiments") or set(data) != {"experiments"}:
        raise ValueError(f"{path}: expected [[experiments]] tables and nothing else")
    try:
        from recofast_sidecar.protocol.experiments import parse
    except ImportError:  # a protocol without experiments: the engine will say what it thinks
        return text
    parse(data["experiments"])
    return text


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))


def engine_toml(options: Mapping[str, Any] | None = None, model: Mapping[str, Any] | None = None,
                experiments: str | None = None, comment: str = "") -> str:
    """The text of an engine configuration: ``[engine]`` options, ``[engine.model]`` options
    and the ``[[experiments]]`` text of an experiment file.

    >>> print(engine_toml({"refresh_seconds": 5.0}, {"dim": 32}, comment="a test"))
    # a test
    [engine]
    refresh_seconds = 5.0
    <BLANKLINE>
    [engine.model]
    dim = 32
    <BLANKLINE>
    """
    lines = [f"# {x}" for x in comment.splitlines()] if comment else []
    lines.append("[engine]")
    lines += [f"{k} = {_toml_value(v)}" for k, v in (options or {}).items()]
    if model:
        lines += ["", "[engine.model]", *(f"{k} = {_toml_value(v)}" for k, v in model.items())]
    lines.append("")
    if experiments:
        lines += ["# -- experiments (copied from the experiment file) --", experiments.rstrip(), ""]
    return "\n".join(lines)


def _wait_http(url: str, timeout: float, procs: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + timeout
    while True:
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"{p.args[2] if len(p.args) > 2 else p.args} exited with code {p.returncode} while starting")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer 200 within {timeout:.0f} s")
        time.sleep(0.2)


def _stop(p: subprocess.Popen | None, timeout: float = 30.0) -> None:
    if p is None or p.poll() is not None:
        return
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


HUB_DOMAIN = "recofast"
"""The JetStream domain of ``recofast up``'s NATS cluster, which its edge reaches through a
leaf node."""


class Stack:
    """The embedded nats-server, the engine and the sidecar as child processes of this one,
    started and stopped together (``with Stack(...) as s:`` starts them; leaving stops them,
    engine last but one, NATS last).

    ``engine_config`` / ``sidecar_config``: TOML files passed as ``--config``;
    ``engine_env``: extra environment of the engine; ``log_dir``: where the engine's and the
    sidecar's output go (``engine.log``, ``sidecar.log``; None: this process's terminal).

    ``engines`` > 1 or ``nats_nodes`` > 1 starts the layout of a shop beyond one machine on
    this one: ``nats_nodes`` nats-servers in a JetStream cluster (the streams replicated
    ``min(3, nats_nodes)`` ways); ``engines`` engines (``DATA/engine<N>``, each its own LMDB
    and checkpoints) sharing ``partitions`` partitions through leases, exchanging item
    deltas and putting their lists in the KV bucket; and the sidecar as an edge on another
    host would run: its own store mirrored from the bucket (``DATA/edge``), connected to a
    leaf node without JetStream (``nats_nodes`` > 1) that reaches the cluster's JetStream
    through its domain. The first engine runs the closed loop (attribution) for all."""

    def __init__(self, data_dir: str | os.PathLike[str], *, port: int = 8080, engine_http_port: int = 0,
                 engine_config: str | os.PathLike[str] | None = None, sidecar_config: str | os.PathLike[str] | None = None,
                 engine_env: Mapping[str, str] | None = None, log_dir: str | os.PathLike[str] | None = None,
                 engines: int = 1, nats_nodes: int = 1, partitions: int = 0) -> None:
        if not 0 < port < 65536:
            raise ValueError(f"--port must be between 1 and 65535, got {port}")
        if not 1 <= engines <= 64:
            raise ValueError(f"--engines must be between 1 and 64, got {engines}")
        if not 1 <= nats_nodes <= 9:
            raise ValueError(f"--nats-nodes must be between 1 and 9, got {nats_nodes}")
        self.distributed = engines > 1 or nats_nodes > 1
        self.partitions = partitions or (max(4, 2 * engines) if engines > 1 else 1)
        if self.partitions < engines:
            raise ValueError(f"--partitions ({self.partitions}) must be at least --engines ({engines})")
        if self.partitions > 1024:
            raise ValueError(f"--partitions must be at most 1024, got {self.partitions}")
        self.n_engines, self.n_nodes = engines, nats_nodes
        self.data = Path(data_dir).resolve()
        self.port = port
        self.engine_ports = [engine_http_port or free_port(), *(free_port() for _ in range(engines - 1))]
        self.engine_port = self.engine_ports[0]
        self.engine_config = Path(engine_config) if engine_config else None
        self.sidecar_config = Path(sidecar_config) if sidecar_config else None
        self.engine_env = dict(engine_env or {})
        self.log_dir = Path(log_dir) if log_dir else None
        self.nats = NatsServer(self.data / "nats", port=-1)
        self.cluster: list[NatsServer] = []
        self.leaf: NatsServer | None = None
        self.engines: list[subprocess.Popen | None] = [None] * engines
        self.sidecar: subprocess.Popen | None = None
        self._logs: list[IO[bytes]] = []

    @property
    def engine(self) -> subprocess.Popen | None:
        """The (first) engine's process."""
        return self.engines[0]

    @property
    def engine_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.engine_ports]

    @property
    def nats_urls(self) -> list[str]:
        """The client URL of each NATS node."""
        return [s.url for s in self.cluster] if self.cluster else [self.nats.url]

    @property
    def edge_nats_url(self) -> str:
        """Where the sidecar connects: the leaf node, or the one server."""
        return self.leaf.url if self.leaf is not None else self.nats_urls[0]

    @property
    def nats_url(self) -> str:
        return self.nats_urls[0]

    @property
    def sidecar_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def engine_url(self) -> str:
        return f"http://127.0.0.1:{self.engine_port}"

    @property
    def dashboard_url(self) -> str:
        """The engine's dashboard, told where the sidecar is (the sidecar's ``/`` leads here)."""
        return f"{self.engine_url}/dashboard?sidecar={self.sidecar_url}"

    def _sidecar_env(self) -> dict[str, str]:
        """The sidecar's ``/`` leads to the dashboard, and the engine's pages (the dashboard,
        the demo shop) may call it by CORS; a variable already set in the environment wins."""
        env = {"RECOFAST_SIDECAR_DASHBOARD_URL": self.dashboard_url, "RECOFAST_SIDECAR_CORS_ORIGINS": self.engine_url}
        return {**env, **os.environ}

    def _out(self, name: str) -> dict[str, Any]:
        if self.log_dir is None:
            return {}
        f = open(self.log_dir / f"{name}.log", "ab")
        self._logs.append(f)
        return {"stdout": f, "stderr": subprocess.STDOUT}

    def start(self) -> Stack:
        """NATS, then the engines (until their ``/healthz`` answers), then the sidecar (same)."""
        self.data.mkdir(parents=True, exist_ok=True)
        if self.n_nodes > 1:
            self.cluster = start_cluster(self.data / "nats", self.n_nodes, leafnodes=True, domain=HUB_DOMAIN)
            self.leaf = NatsServer(self.data / "nats" / "edge", name="recofast-edge",
                                   leaf_remote=",".join(s.leafnode_url for s in self.cluster), jetstream=False)
            self.leaf.start()
        else:
            self.nats.start()
        if self.distributed:
            from recofast.engine.config import EngineConfig
            from recofast.engine.streams import wait_streams

            asyncio.run(wait_streams(self.nats_url, EngineConfig(stream_replicas=min(3, self.n_nodes)), timeout=60))
        for i in range(self.n_engines):
            self._start_engine(i, wait=False)
        for i in range(self.n_engines):
            _wait_http(f"{self.engine_urls[i]}/healthz", 60, [self.engines[i]])  # type: ignore[list-item]
        lmdb = self.data / ("edge" if self.distributed else "") / "lmdb"
        cmd = [sys.executable, "-m", "recofast_sidecar.server", "--lmdb", str(lmdb), "--port", str(self.port),
               "--nats", self.edge_nats_url, "--partitions", str(self.partitions)]
        if self.distributed:
            cmd.append("--sync")
        if self.sidecar_config is not None:
            cmd += ["--config", str(self.sidecar_config)]
        env = self._sidecar_env()
        if self.leaf is not None:
            env.setdefault("RECOFAST_SIDECAR_JETSTREAM_DOMAIN", HUB_DOMAIN)
        self.sidecar = subprocess.Popen(cmd, env=env, preexec_fn=_die_with_parent, **self._out("sidecar"))
        _wait_http(f"{self.sidecar_url}/healthz", 60, [*self.engines, self.sidecar])  # type: ignore[list-item]
        return self

    def _start_engine(self, i: int, wait: bool = True) -> None:
        home = self.data / f"engine{i}" if self.distributed else self.data
        cmd = [sys.executable, "-m", "recofast.cli", "serve", "--nats", self.nats_urls[i % len(self.nats_urls)],
               "--lmdb", str(home / "lmdb"), "--model-dir", str(home / "models"), "--http-port", str(self.engine_ports[i])]
        env = {**os.environ, **self.engine_env}
        if self.distributed:
            cmd += ["--engine-id", f"engine{i}"]
            if self.n_engines > 1:
                cmd += ["--lease-partitions", str(self.partitions)]
            env.update({"RECOFAST_STREAM_REPLICAS": str(min(3, self.n_nodes)), "RECOFAST_PUBLISH_LISTS": "true"})
            if i > 0:  # one closed loop: the first engine attributes every partition's events
                env["RECOFAST_ATTRIBUTION"] = "false"
        if self.engine_config is not None:
            cmd += ["--config", str(self.engine_config)]
        self.engines[i] = subprocess.Popen(cmd, env=env, preexec_fn=_die_with_parent,
                                           **self._out("engine" if i == 0 else f"engine{i}"))
        if wait:
            _wait_http(f"{self.engine_urls[i]}/healthz", 60, [self.engines[i]])  # type: ignore[list-item]

    def start_engine(self, config: str | os.PathLike[str] | None = None) -> None:
        """Starts the (first) engine (with ``config`` as its configuration file from now on,
        when given) and waits until its ``/healthz`` answers."""
        if config is not None:
            self.engine_config = Path(config)
        self._start_engine(0)

    def restart_engine(self, config: str | os.PathLike[str] | None = None) -> None:
        """Stops the (first) engine (it checkpoints) and starts it again, with ``config`` when
        given. The sidecar goes on serving the list store meanwhile."""
        _stop(self.engine, 60)
        self.start_engine(config)

    def engine_states(self) -> list[dict[str, Any]]:
        """Each engine's ``/healthz`` body (``{}`` for one that does not answer)."""
        out = []
        for url in self.engine_urls:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2) as r:
                    out.append(json.loads(r.read()))
            except urllib.error.HTTPError as e:  # 503 while starting or unhealthy: the body says why
                out.append(json.loads(e.read() or b"{}"))
            except (urllib.error.URLError, OSError, ValueError):
                out.append({})
        return out

    def wait_applied(self, events: int, timeout: float) -> int:
        """Until the engines together have applied (or dead-lettered) ``events`` events;
        returns how many they have. Raises TimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            done = sum(int(b.get("events_applied_total", 0)) + int(b.get("events_dlq_total", 0)) for b in self.engine_states())
            if done >= events:
                return done
            if time.monotonic() > deadline:
                raise TimeoutError(f"the engines applied {done} of {events} events within {timeout:.0f} s")
            time.sleep(0.2)

    def exited(self) -> str | None:
        """What has exited (``"the engine exited with code 1"``), or None."""
        named = [("engine" if len(self.engines) == 1 else f"engine{i}", p) for i, p in enumerate(self.engines)]
        for name, p in (*named, ("sidecar", self.sidecar)):
            if p is not None and p.poll() is not None:
                return f"the {name} exited with code {p.returncode}"
        return None

    def stop(self) -> None:
        _stop(self.sidecar)
        for p in self.engines:  # all at once: each checkpoints on its way out
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.engines:
            _stop(p, 60)
        if self.leaf is not None:
            self.leaf.stop()
        for n in self.cluster:
            n.stop()
        self.nats.stop()
        for f in self._logs:
            f.close()
        self._logs.clear()

    def __enter__(self) -> Stack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- warming and shoppers ---------------------------------------------------------------------


async def publish_history(stack: Stack, events: Path, catalog: Path, pack: int = 100, sync: Any = None,
                          http: Any = None) -> int:
    """Publishes a generated history and its catalog (each new item just before its first
    event), each message stamped with the time it is published; returns the number of events
    and upserts published. Without ``sync``, at full speed; with ``sync`` (an open
    :class:`~recofast.evaluation.shoppers.EngineSync`, and ``http`` an aiohttp session), one
    message at a time, each applied by the engine before the next is published, so every
    message is a batch of its own: how the engine cuts the stream into batches changes the
    order in which it meets new items, and so the model it learns."""
    from recofast_sidecar.protocol.names import MSG_ID_HEADER

    from recofast.engine.publish import interleaved, publish, read_events, subject_for

    parts = stack.partitions
    msgs = interleaved(catalog, read_events(events), pack, stamp_now=sync is not None, partitions=parts)
    if sync is None:
        _, n = await publish(stack.nats_url, interleaved(catalog, read_events(events), pack, stamp_now=True, partitions=parts))
        return n
    n = 0
    for msg_id, body, count, subject in msgs:
        await sync.js.publish(subject or subject_for(0), body, headers={MSG_ID_HEADER: msg_id}, timeout=10)
        await sync.wait(http)
        n += count
    return n


async def _warm(stack: Stack, events: Path, catalog: Path, refreshes: int = 0, lockstep: bool = False,
                timeout: float = 120.0) -> dict[str, Any]:
    """Publishes the history (in ``lockstep``: one message at a time, see
    :func:`publish_history`), waits until the engine has applied it and then for
    ``refreshes`` more completed refresh rounds (checkpoints); returns the engine's state."""
    import aiohttp

    from recofast.evaluation.shoppers import EngineSync

    async with EngineSync(stack.engine_url, stack.nats_url, timeout=timeout) as sync, aiohttp.ClientSession() as http:
        await publish_history(stack, events, catalog, sync=sync if lockstep else None, http=http)
        state = await sync.wait(http)
        # The round under way may have started before the history was applied: the one
        # after it is the first to see all of it.
        want = int(state.get("model_version", 0)) + refreshes + (1 if refreshes else 0)
        deadline = time.monotonic() + timeout
        while int(state.get("model_version", 0)) < want:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no refresh round completed within {timeout:.0f} s")
            await asyncio.sleep(0.05)
            state = await sync.engine_state(http)
    return state


def _demo_thread(stack: Stack, data: Path, rate: float, stop: threading.Event, concurrency: int,
                 drift_at: int | None = None) -> None:
    """The demo's traffic, in a thread of its own: the history, then shoppers until ``stop``."""
    from recofast.evaluation.shoppers import Shoppers
    from recofast.evaluation.simulate import Shop

    events, catalog = data / "demo-events.jsonl", data / "demo-catalog.jsonl"
    n = write_demo_events(events, catalog=catalog)

    async def main() -> None:
        if stack.distributed:  # each engine has its own position in the stream: count what they applied
            await publish_history(stack, events, catalog)
            await asyncio.to_thread(stack.wait_applied, n, 300.0)
        else:
            await _warm(stack, events, catalog)
        print(f"  demo             {n} events of history applied; shoppers are shopping", flush=True)
        shop = Shop.from_seed(0, users=DEMO_USERS, items=DEMO_ITEMS, events=n)
        shoppers = Shoppers(shop, stack.sidecar_url, seed=int(time.time()), concurrency=concurrency, hours="wall",
                            keep_log=False, drift_at=drift_at)
        t = await shoppers.run_continuous(rate=rate, should_stop=stop.is_set)
        tot = t["total"]
        print(f"  demo shoppers    {t['sessions']} sessions, {tot['lists']} lists, {tot['clicks']} clicks, "
              f"{tot['purchases']} purchases from lists, {t['organic']['purchases']} on their own", flush=True)

    try:
        asyncio.run(main())
    except Exception as e:  # noqa: BLE001 - the stack goes on serving without demo traffic
        if not stop.is_set():
            print(f"recofast up: the demo traffic stopped: {type(e).__name__}: {e}", file=sys.stderr, flush=True)


def run_stack(*, port: int = 8080, data_dir: str = "data", engine_http_port: int = 0, demo: bool = False,
              events: str | None = None, rate: float = 200.0, duration: float = 0.0, experiment_file: str | None = None,
              concurrency: int = 8, drift_at: int | None = None, engines: int = 1, nats_nodes: int = 1,
              partitions: int = 0) -> int:
    """Starts NATS, the engine and the sidecar (and, with ``demo``, shoppers; with ``events``,
    a feeder); runs until interrupted or for ``duration`` seconds; stops them all. Returns
    the exit code. ``engines``, ``nats_nodes``, ``partitions``: the layout beyond one
    machine (see :class:`Stack`)."""
    if not 0 < port < 65536:
        raise ValueError(f"--port must be between 1 and 65535, got {port}")
    if rate <= 0:
        raise ValueError(f"--rate must be positive, got {rate}")
    if events and not os.path.exists(events):
        raise FileNotFoundError(f"no such event log: {events}")
    experiments = read_experiments(experiment_file) if experiment_file else None
    data = Path(data_dir).resolve()
    data.mkdir(parents=True, exist_ok=True)
    config = None
    if experiments:
        config = data / "recofast.toml"
        config.write_text(engine_toml(experiments=experiments, comment="Written by `recofast up --experiment-file`; "
                                      "the engine re-reads its experiments when this file changes."))
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    stack = Stack(data, port=port, engine_http_port=engine_http_port, engine_config=config, engines=engines,
                  nats_nodes=nats_nodes, partitions=partitions)
    feeder = None
    stop_demo = threading.Event()
    demo_thread = None
    try:
        stack.start()
        url = stack.nats_url
        base = stack.sidecar_url
        print(f"recofast is up (data in {data})", flush=True)
        print(f"  dashboard        {stack.dashboard_url}   (also {base}/)", flush=True)
        print(f"  demo shop        {stack.engine_url}/shop?sidecar={base}", flush=True)
        print(f"  recommendations  {base}/v1/recommendations/<user>?k=10", flush=True)
        print(f"  popular          {base}/v1/popular?k=10", flush=True)
        print(f"  events (POST)    {base}/v1/events     tracker {base}/v1/track.js", flush=True)
        print(f"  API              {base}/openapi.json", flush=True)
        if stack.n_engines == 1:
            print(f"  engine metrics   {stack.engine_url}/metrics", flush=True)
        else:
            print(f"  engines          {stack.n_engines} sharing {stack.partitions} partitions through leases "
                  "(each one's /healthz lists its partitions; the first runs the closed loop)", flush=True)
            for i, u in enumerate(stack.engine_urls):
                print(f"    engine{i}        {u}/metrics   {u}/healthz   (data in {data / f'engine{i}'})", flush=True)
        if stack.cluster:
            print(f"  NATS cluster     {', '.join(stack.nats_urls)} (JetStream domain {HUB_DOMAIN}, "
                  f"streams replicated {min(3, stack.n_nodes)} ways)", flush=True)
            print(f"  NATS leaf node   {stack.edge_nats_url} (the edge sidecar's; its lists mirrored into "
                  f"{data / 'edge'})", flush=True)
        else:
            print(f"  NATS             {url}", flush=True)
        if config is not None:
            print(f"  experiments      {config} (edit it to change them)", flush=True)
        if events:
            feeder = subprocess.Popen([sys.executable, "-m", "recofast.cli", "publish", "--events", events, "--nats", url,
                                       "--rate", str(rate), "--pack", "10", "--stamp-now", "--quiet",
                                       "--partitions", str(stack.partitions)])
        if demo:
            print(f"  demo shoppers    {base}/v1/recommendations/shopper1?k=10", flush=True)
            demo_thread = threading.Thread(target=_demo_thread, args=(stack, data, rate, stop_demo, concurrency, drift_at),
                                           name="demo-shoppers", daemon=True)
            demo_thread.start()
        print("Ctrl-C stops everything.", flush=True)
        deadline = time.monotonic() + duration if duration > 0 else None
        while not stopping and (deadline is None or time.monotonic() < deadline):
            gone = stack.exited()
            if gone:
                print(f"recofast up: {gone}; stopping", file=sys.stderr)
                return 1
            time.sleep(0.2)
        return 0
    finally:
        print("stopping...", flush=True)
        stop_demo.set()
        if demo_thread is not None:
            demo_thread.join(15)
        _stop(feeder, 10)
        stack.stop()
        for s, h in old.items():
            signal.signal(s, h)


# -- the simulator ----------------------------------------------------------------------------

SIM_ENGINE = {"segment_seconds": 0.1, "fetch_timeout": 0.05, "expire_seconds": 0.0, "lmdb_sync": False}
"""Engine options of the simulator's stack: segment lists written 0.1 s after a change, a fast
idle loop, no expiry (it runs on a wall-clock cadence), no fsync per commit."""
SIM_WARM_REFRESH = 0.5
"""``refresh_seconds`` while the history is learned: a full refresh round soon after it."""
SIM_RUN_REFRESH = 1e9
"""``refresh_seconds`` while the shoppers shop: no refresh round (they run on a wall-clock
cadence, so they would make the lists depend on timing)."""


def run_simulation(*, shoppers: int, sessions: int, seed: int = 0, data_dir: str, items: int = 1_000, categories: int = 12,
                   history: int | None = None, experiment_file: str | None = None, explore: float = 0.0, k: int = 10,
                   concurrency: int = 8, round_size: int | None = None, browse: float = 0.5, beta: float = 1.0,
                   dim: int = 32, port: int = 0, progress: bool = True, log: str | None = None,
                   hours: str = "seeded", drift_at: int | None = None) -> dict[str, Any]:
    """``recofast simulate --shoppers``: starts a stack of its own in ``data_dir`` (which must
    be empty or missing: the run starts from an empty shop), warms the model with ``history``
    generated events (default 20 a shopper) of the same shop, and runs ``sessions`` sessions of
    ``shoppers`` simulated shoppers in lockstep. Returns the shoppers' ground truth
    (:meth:`~recofast.evaluation.shoppers.Shoppers.tallies`) with what the stack did.

    The stack is set up for reproducible runs: the engine learns the history, completes a full
    refresh round after it (every list, the segment lists, the context records the sidecar
    re-ranks with), and is restarted without periodic refreshes or expiry (``DATA/recofast.toml``;
    the warm-up configuration is ``DATA/recofast-warm.toml``); the model's scoring snapshot is
    rebuilt after every batch (``snapshot_every = 1``, ``snapshot_ms = 0``), the engine scores on
    one thread (``RAYON_NUM_THREADS=1``) and the sidecar's exploration draws are seeded.
    ``log``: a file for the sessions, as JSON Lines (:meth:`Shoppers.write_log`). The result
    also holds the engine's own report of the closed loop (``system``, ``/v1/loop?by=variant``)
    once it has read both streams, and what the stack did (``stack``).

    ``drift_at``: at that session a share of the shoppers switch taste
    (:meth:`~recofast.evaluation.shoppers.Shoppers.switch_tastes`); the result's ``drift`` says
    when, and ``alerts`` lists the engine's alerts (``recofast.alerts``) with the session
    number and the events posted when each arrived (at most a round late: the driver notes
    them between rounds)."""
    from recofast.evaluation.shoppers import ClickModel, EngineSync, Shoppers
    from recofast.evaluation.simulate import Shop

    if shoppers <= 0 or sessions <= 0:
        raise ValueError("--shoppers and --sessions must be positive")
    data = Path(data_dir).resolve()
    if data.exists() and any(data.iterdir()):
        raise ValueError(f"--data-dir {data_dir} is not empty: a simulation starts from an empty shop")
    experiments = read_experiments(experiment_file) if experiment_file else None
    n_history = 20 * shoppers if history is None else history
    if n_history <= 0:
        raise ValueError("--events (the history) must be positive")
    model = ClickModel(beta=beta)
    shop = Shop.from_seed(seed, users=shoppers, items=items, events=n_history, categories=categories)
    data.mkdir(parents=True, exist_ok=True)
    model_opts = {"dim": dim, "seed": seed, "snapshot_every": 1, "snapshot_ms": 0}
    warm_cfg, run_cfg, side_cfg = data / "recofast-warm.toml", data / "recofast.toml", data / "recofast-sidecar.toml"
    warm_cfg.write_text(engine_toml({**SIM_ENGINE, "refresh_seconds": SIM_WARM_REFRESH}, model_opts, experiments,
                                    comment="recofast simulate: the engine while it learns the history"))
    run_cfg.write_text(engine_toml({**SIM_ENGINE, "refresh_seconds": SIM_RUN_REFRESH}, model_opts, experiments,
                                   comment="recofast simulate: the engine while the shoppers shop (no periodic refresh)"))
    side_cfg.write_text(f"# recofast simulate: the sidecar\n[sidecar]\nseed = {int(seed)}\n")
    events, catalog = data / "history.jsonl", data / "catalog.jsonl"
    n = write_demo_events(events, events=n_history, users=shoppers, items=items, seed=seed, catalog=catalog,
                          categories=categories)
    t0 = time.monotonic()
    with Stack(data, port=port or free_port(), engine_config=warm_cfg, sidecar_config=side_cfg,
               engine_env={"RAYON_NUM_THREADS": "1"}, log_dir=data) as stack:
        warm = asyncio.run(_warm(stack, events, catalog, refreshes=1, lockstep=True))
        stack.restart_engine(run_cfg)
        t1 = time.monotonic()
        people = Shoppers(shop, stack.sidecar_url, seed=seed, k=k, model=model, browse=browse, concurrency=concurrency,
                          explore=explore, hours=hours, round_size=round_size, drift_at=drift_at)  # type: ignore[arg-type]
        alerts: list[dict[str, Any]] = []

        async def on_alert(msg: Any) -> None:
            alerts.append({"session": people._number, "events_posted": people.counters["events_posted"],
                           "alert": json.loads(msg.data)})

        async def shop_all() -> tuple[dict[str, Any], dict[str, Any]]:
            import aiohttp
            from recofast_sidecar.protocol.names import ALERTS_SUBJECT

            settle = 2 * SIM_ENGINE["segment_seconds"] + SIM_ENGINE["fetch_timeout"]
            async with EngineSync(stack.engine_url, stack.nats_url, settle=settle) as sync:
                await sync._nc.subscribe(ALERTS_SUBJECT, cb=on_alert)
                t = await people.run_lockstep(sessions, sync, progress=progress)
                async with aiohttp.ClientSession() as http:
                    t["system"] = await sync.loop_report(http, by="variant")
                    return t, await sync.engine_state(http)

        tallies, engine = asyncio.run(shop_all())
        t2 = time.monotonic()
    tallies["alerts"] = alerts
    if log:
        with open(log, "w") as f:
            people.write_log(f)
    tallies["stack"] = {
        "data_dir": str(data), "history_events": n, "warm_seconds": round(t1 - t0, 1), "shop_seconds": round(t2 - t1, 1),
        "experiments": experiment_file,
        "engine": {key: engine.get(key) for key in ("stream_seq", "events_applied_total", "events_dlq_total", "model_version")},
        "warm_model_version": warm.get("model_version"),
    }
    return tallies


__all__ = ["HUB_DOMAIN", "Stack", "engine_toml", "free_port", "read_experiments", "run_simulation", "run_stack", "write_demo_events"]
