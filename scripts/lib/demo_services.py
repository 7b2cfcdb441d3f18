"""The processes of scripts/demo: the Kafka broker (Tansu or librdkafka's mock
cluster), VictoriaMetrics, the uplink and the agent, each logging into the
demo's directory; started, stopped and restarted for the story (demo.py), and
every one of them stopped at the end, whatever happens."""
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request

_STARTED = []  # every process started, stopped by stop_everything()


class DemoError(Exception):
    pass


_LIBC = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def stop_with_parent():
    """In the child, before exec: SIGTERM when the demo's process ends."""
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_for_port(port, seconds, name):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise DemoError(f"{name} did not start listening on 127.0.0.1:{port} within {seconds} s")


def stop_everything(seconds=20):
    """Stops every process started, newest first (the agent and the uplink
    while the broker and the database still answer them), each with SIGTERM,
    then SIGKILL once `seconds` in all have passed."""
    deadline = time.monotonic() + seconds
    for p in reversed(_STARTED):
        if p.poll() is None:
            p.terminate()
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    _STARTED.clear()


def ui_url(vm_port, device):
    """VictoriaMetrics' own UI with the demo's readings graphed, or None when
    this VictoriaMetrics has no UI (Debian's package leaves vmui out)."""
    query = f'{{device_id="{device}",__name__=~"weather_.*|visibility_visibility_m|host_.*|fan_fan_rpm"}}'
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{vm_port}/vmui/", timeout=5) as r:
            if r.status != 200:
                return None, query
    except OSError:
        return None, query
    frag = urllib.parse.urlencode({"g0.expr": query, "g0.range_input": "5m", "g0.relative_time": "last_5_minutes"})
    return f"http://127.0.0.1:{vm_port}/vmui/#/?{frag}", query


class Services:
    def __init__(self, work, bin_dir):
        self.work, self.bin = work, os.path.abspath(bin_dir)
        self.procs = {}
        self.broker_kind = None
        self.kafka_port = None
        self.broker_stopped = False

    def _spawn(self, name, args, **kw):
        log = open(os.path.join(self.work, f"{name}.log"), "ab")
        # A session of its own: Ctrl-C reaches the demo only, which stops the
        # processes in order. The kernel stops each one should the demo die
        # without that (SIGKILL, a crash).
        p = subprocess.Popen(args, stdout=kw.pop("stdout", log), stderr=log, cwd=self.work,
                             start_new_session=True, preexec_fn=stop_with_parent, **kw)
        _STARTED.append(p)
        self.procs[name] = p
        return p

    # The broker: Tansu with its data in sqlite (it survives the restart), or
    # librdkafka's mock cluster, whose broker is taken down and up in-process.
    def start_broker(self, kind, topics):
        self.broker_kind = kind
        if kind == "mock":
            p = self._spawn("kafka", [os.path.join(self.bin, "buoy-demo-kafka"), *topics],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            line = p.stdout.readline().strip()
            if not line:
                raise DemoError(f"buoy-demo-kafka did not start (see {self.work}/kafka.log)")
            self.kafka_port = int(line.rsplit(":", 1)[1])
            return line
        if not shutil.which("tansu"):
            raise DemoError("tansu not found: install it with "
                            "`cargo install tansu --locked --version 0.6.0 --features dynostore,libsql`")
        self.kafka_port = free_port()
        self._start_tansu()
        create_topics(self.kafka_port, topics)
        return f"127.0.0.1:{self.kafka_port}"

    def _start_tansu(self):
        url = f"tcp://127.0.0.1:{self.kafka_port}"
        self._spawn("kafka", ["tansu", "broker", "--listener-url", url, "--advertised-listener-url", url,
                              "--storage-engine", "sqlite://broker.db"],
                    env={**os.environ, "RUST_LOG": "warn"})
        wait_for_port(self.kafka_port, 30, "Tansu")

    def stop_broker(self):
        p = self.procs["kafka"]
        self.broker_stopped = True
        if self.broker_kind == "mock":
            self._command(p, "down")
            return
        p.terminate()
        p.wait(timeout=20)

    def restart_broker(self):
        self.broker_stopped = False
        if self.broker_kind == "mock":
            self._command(self.procs["kafka"], "up")
        else:
            self._start_tansu()

    def _command(self, p, word):
        p.stdin.write(word + "\n")
        p.stdin.flush()
        if p.stdout.readline().strip() != word:
            raise DemoError(f"buoy-demo-kafka did not answer {word!r} (see {self.work}/kafka.log)")

    def start_victoria(self):
        port = free_port()
        self._spawn("victoria", ["victoria-metrics", f"-httpListenAddr=127.0.0.1:{port}",
                                 f"-storageDataPath={self.work}/victoria", "-dedup.minScrapeInterval=1ms",
                                 "-search.latencyOffset=1s", "-loggerLevel=WARN"])
        wait_for_port(port, 30, "VictoriaMetrics")
        return port

    def start_uplink(self):
        self._spawn("uplink", [os.path.join(self.bin, "uplink"), "--config", f"{self.work}/uplink.toml"])

    def start_agent(self):
        self._spawn("edge-agent", [os.path.join(self.bin, "edge-agent"), "--config", f"{self.work}/edge-agent.toml",
                                   "run", "--report-state", f"{self.work}/final-state.json"])

    def agent_status(self):
        r = subprocess.run([os.path.join(self.bin, "edge-agent"), "--config", f"{self.work}/edge-agent.toml",
                            "status", "--json"], capture_output=True, text=True, timeout=10)
        if r.returncode == 3 or not r.stdout.strip():
            return None
        return json.loads(r.stdout)

    def check_alive(self):
        for name, p in self.procs.items():
            if name == "kafka" and self.broker_stopped:
                continue
            if p.poll() is not None:
                raise DemoError(f"{name} exited unexpectedly (status {p.returncode}); see {self.work}/{name}.log")

    def stop_agent(self):
        """SIGTERM (a clean stop: the agent hands over what is in flight and
        writes its final state); returns that state."""
        p = self.procs.pop("edge-agent")
        p.terminate()
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            raise DemoError("the agent did not stop within 30 s of SIGTERM")
        if p.returncode != 0:
            raise DemoError(f"the agent exited with status {p.returncode}; see {self.work}/edge-agent.log")
        with open(f"{self.work}/final-state.json") as f:
            return json.load(f)

    def stop_all(self):
        stop_everything()
        self.procs.clear()


def create_topics(port, topics):
    """Tansu creates no topic on first use."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError
    deadline = time.monotonic() + 30
    while True:
        try:
            admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}")
            break
        except Exception as e:  # kafka-python raises several kinds while the broker starts
            if time.monotonic() > deadline:
                raise DemoError(f"cannot reach the broker to create topics: {e}")
            time.sleep(0.5)
    try:
        admin.create_topics([NewTopic(t, 1, 1) for t in topics])
    except TopicAlreadyExistsError:
        pass
    admin.close()
