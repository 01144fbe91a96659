"""Data-parallel training over MXNet's parameter-server kvstore (``dist_sync``), and a launcher.

A job is one scheduler, S servers and W workers, each a process told its role by
the environment (DMLC_ROLE, DMLC_PS_ROOT_URI, DMLC_PS_ROOT_PORT, DMLC_NUM_SERVER,
DMLC_NUM_WORKER).  The scheduler and the servers are plain Python processes that
import mxnet: with DMLC_ROLE=scheduler or server, ``import mxnet`` runs that role's
loop (mxnet/kvstore/kvstore_server.py) and exits when the workers are done.  The
workers run the user's command, e.g. ``hmmop fit data.txt --kvstore dist_sync``.

    from hmmop.fit import distributed
    kv = distributed.kvstore()                    # this worker's dist_sync store (one per process)
    mine = distributed.shard(lengths, kv.rank, kv.num_workers)
    total = distributed.allreduce_sum(kv, [local_symbols], integers=True)[0]
    status = distributed.launch(2, 1, ["hmmop", "fit", "data.txt", "--kvstore", "dist_sync"])

launch() is the watchdog that a parameter-server job needs: when a worker dies,
ps-lite makes every other process wait forever, silently.  launch() watches every
process and stops the whole job (each process in its own process group) when one
fails, when the job passes its timeout, or on SIGINT/SIGTERM.
"""
import atexit
import heapq
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

DIST_TYPES = ("dist_sync", "dist_sync_device")
# Keys of the values hmmop sums or broadcasts through the store: away from 0, 1, ...
# (what a gluon.Trainer given the same store would use), each initialised once - a
# second init, from rank 0 alone, would wait forever for the other workers' pushes.
_KEY_BASE = 1 << 20
_ENV = ("DMLC_ROLE", "DMLC_PS_ROOT_URI", "DMLC_PS_ROOT_PORT", "DMLC_NUM_SERVER", "DMLC_NUM_WORKER")
_store = None
_next_key = _KEY_BASE


class DistributedError(RuntimeError):
    """A distributed fit that cannot run as asked (no job around it, data that differs between workers)."""


# -- inside a worker -----------------------------------------------------------------------------
def in_job():
    """True when this process is a worker of a parameter-server job (its DMLC_* environment is set)."""
    return os.environ.get("DMLC_ROLE") == "worker"


def kvstore(kind="dist_sync"):
    """This worker's distributed kvstore (created once per process, then reused).

    Raises DistributedError, naming what is missing, when the process was not
    started as a worker of a job (see launch, ``hmmop launch``): creating the store
    outside one would wait forever for a scheduler.  From then on an uncaught
    exception (after its traceback) or sys.exit(status) with a failure status ends
    the process at once (os._exit) instead of letting the interpreter's exit wait
    for the other workers in ps-lite's final barrier: the launcher then sees the
    failure and stops the job.  (``raise SystemExit(3)`` written out is not caught:
    use sys.exit or exit_now.)
    """
    global _store
    if kind not in DIST_TYPES:
        raise ValueError(f"kvstore must be one of {DIST_TYPES}, got {kind!r}")
    if _store is not None:
        if _store.type != kind:
            raise DistributedError(f"this process already has a {_store.type} kvstore; it cannot open "
                                   f"a {kind} one too")
        return _store
    missing = [name for name in _ENV if not os.environ.get(name)]
    if missing or os.environ["DMLC_ROLE"] != "worker":
        what = f"{', '.join(missing)} not set" if missing else f"DMLC_ROLE is {os.environ['DMLC_ROLE']!r}"
        raise DistributedError(f"kvstore={kind!r} needs a parameter-server job around this process "
                               f"({what}); start it with `hmmop launch -n WORKERS -- COMMAND`")
    import mxnet as mx
    _store = mx.kv.create(kind)
    _exit_at_once_on_error()
    atexit.register(close)
    return _store


def close():
    """Leave the job: free this worker's store now (ps-lite's final barrier with the other workers).

    Run at exit (registered by kvstore()): a dist store left for the interpreter's
    own teardown aborts the process ("terminate called without an active
    exception", status -6) after the work is done.  The store is freed through its
    handle, since gluon Trainers may still hold the Python object.
    """
    global _store
    if _store is None:
        return
    import ctypes
    from mxnet.base import _LIB, check_call
    handle, _store.handle = _store.handle, ctypes.c_void_p(None)     # its __del__ then frees nothing
    _store = None
    check_call(_LIB.MXKVStoreFree(handle))


def rank(kv=None):
    """This worker's rank, 0 <= rank < num_workers (0 without a distributed store)."""
    return 0 if kv is None else kv.rank


def num_workers(kv=None):
    """The job's number of workers (1 without a distributed store)."""
    return 1 if kv is None else kv.num_workers


def shard(lengths, rank, num_workers):
    """Indices (sorted) of the sequences that worker ``rank`` of ``num_workers`` takes.

    Balanced by symbol count and deterministic: the longest sequences first (ties
    by index), each to the worker with the fewest symbols so far (ties to the lower
    rank) - the same split on every worker that sees the same lengths.  A worker may
    get no sequence at all when there are fewer sequences than workers.
    """
    if not 0 <= rank < num_workers:
        raise ValueError(f"rank must be in 0..{num_workers - 1}, got {rank}")
    lengths = [int(n) for n in lengths]
    loads = [(0, w) for w in range(num_workers)]          # a heap of (symbols so far, worker)
    owner = [0] * len(lengths)
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        load, w = loads[0]
        owner[i] = w
        heapq.heapreplace(loads, (load + lengths[i], w))
    return [i for i, w in enumerate(owner) if w == rank]


def _new_key():
    global _next_key
    _next_key += 1
    return _next_key - 1


def allreduce_sum(kv, values, integers=False):
    """The sum over all workers of ``values`` (a list of numbers), the same on every worker.

    Every worker must call it, the same number of times, in the same order (it is a
    collective; each call takes a fresh key, so use Allreduce for a sum repeated
    every step).  The servers must hold no optimizer (hmmop never sends them one).
    They sum in float32 (float64 arrays too: measured): about 7 significant digits;
    integers=True sums non-negative integers below 2**40 exactly (as 16-bit digits).
    """
    import mxnet as mx
    if integers:
        bad = [v for v in values if int(v) != v or not 0 <= v < 2 ** 40]
        if bad:
            raise ValueError(f"integers=True takes integers in [0, 2**40), got {bad[0]!r}")
        parts = []
        for v in values:
            v = int(v)
            parts += [v >> 32, (v >> 16) & 0xFFFF, v & 0xFFFF]
    else:
        parts = [float(v) for v in values]
    key = _new_key()
    mine = mx.nd.array(parts, dtype="float32")
    kv.init(key, mx.nd.zeros(len(parts), dtype="float32"))     # rank 0's zeros, then a barrier
    kv.push(key, mine)                                           # summed once every worker pushed
    out = mx.nd.zeros(len(parts), dtype="float32")
    kv.pull(key, out=out)
    summed = out.asnumpy().astype("float64")
    if not integers:
        return [float(v) for v in summed]
    return [int(hi) * 2 ** 32 + int(mid) * 2 ** 16 + int(lo) for hi, mid, lo in summed.reshape(-1, 3)]


class Allreduce:
    """Sums NDArrays over the workers, in place, every step: ``summer(arrays)``.

    The arrays must have the shapes of ``templates``; each has a key of its own,
    initialised once (keys go round-robin over the servers).  The servers hold no
    optimizer in hmmop's jobs, so a push is summed over the workers and a pull then
    reads the sum: a worker's pull of one round is done before its push of the
    next, and the servers merge a round only once every worker has pushed it.
    Sent as float32 (the servers sum float64 arrays in float32 precision anyway),
    so float64 values are summed to about 7 significant digits.
    """

    def __init__(self, kv, templates):
        import mxnet as mx
        self.kv = kv
        self.keys = [_new_key() for _ in templates]
        self.shapes = [tuple(t.shape) for t in templates]
        kv.init(self.keys, [mx.nd.zeros(shape, dtype="float32") for shape in self.shapes])

    def __call__(self, arrays):
        wire = [a if a.dtype == "float32" else a.astype("float32") for a in arrays]
        self.kv.push(self.keys, wire)
        self.kv.pull(self.keys, out=wire)
        for a, w in zip(arrays, wire):
            if w is not a:
                w.astype(a.dtype).copyto(a)
        return arrays


def broadcast(kv, arrays):
    """Overwrite each NDArray of ``arrays`` (in place) with rank 0's value: every worker calls it."""
    for array in arrays:
        key = _new_key()
        kv.init(key, array)        # only rank 0's value is stored; init ends with a barrier
        kv.pull(key, out=array)


def _exit_at_once_on_error():
    """An uncaught exception, or sys.exit with a failure status, ends this worker at once: the
    interpreter's normal exit would wait for the other workers in ps-lite's final barrier, and
    they - waiting for this worker's gradients - would never come (the launcher could not see
    the failure: the process would not end)."""
    previous_hook, previous_exit = sys.excepthook, sys.exit

    def hook(kind, value, tb):
        previous_hook(kind, value, tb)
        exit_now(1)

    def exit(status=None):
        if status is None or status == 0:
            previous_exit(status)
        if not isinstance(status, int):
            print(status, file=sys.stderr)
            status = 1
        exit_now(status)

    sys.excepthook = hook
    sys.exit = exit


def exit_now(status):
    """End this worker at once with ``status`` (no final barrier; see kvstore())."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


# -- the launcher ----------------------------------------------------------------------------------
_SERVER_CODE = ("import _hmmop_mxnet_hook as h; h.restore_numpy_names(); "
                "import mxnet")      # with DMLC_ROLE=scheduler/server, importing mxnet runs the role's loop


class _Process:
    def __init__(self, label, popen, host=None):
        self.label, self.popen, self.host = label, popen, host


def free_port(host="127.0.0.1"):
    """A TCP port that is free on ``host`` now (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_is_free(port, host="127.0.0.1"):
    """Whether a scheduler could bind ``port`` now: nothing listens on it.  With SO_REUSEADDR,
    as ZeroMQ (ps-lite's transport) binds: connections of a stopped job left in TIME_WAIT do
    not count."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def read_hosts(path):
    """Host names from a hosts file: one per line, '#' comments and blank lines ignored."""
    hosts = []
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                hosts.append(line.split()[0])
    if not hosts:
        raise ValueError(f"{path}: the hosts file names no host")
    return hosts


def launch(n_workers, n_servers, command, timeout=None, hosts=None, port=None, err=None,
           python=None, grace=3.0, retries=2):
    """Run ``command`` (a list of arguments, or a shell string) as ``n_workers`` workers of a
    dist_sync job with ``n_servers`` servers and a scheduler; returns the exit status.

    On one machine (hosts=None) every process runs here, over loopback, on a free
    port (``port`` to choose one).  With ``hosts`` (a list of host names) the
    scheduler runs here and the servers and workers go round-robin over the hosts
    through ``ssh -tt HOST`` (passwordless ssh, the same paths and Python on every
    host; not tested by hmmop's suite).

    Every process gets its own process group.  When all workers exit 0 the job
    ends (0).  When any process exits non-zero - or a scheduler or server exits
    before the workers are done - or ``timeout`` seconds pass, or this process gets
    SIGINT/SIGTERM, every process group is stopped (SIGTERM, then SIGKILL after
    ``grace`` seconds) and one line naming the cause goes to ``err`` (stderr):
    the status is then the failed worker's if it is positive, else 1; 124 for the
    timeout; 130 or 143 for a signal.  A scheduler that cannot bind its automatic
    port (taken between choosing and binding) is retried on another port.
    """
    err = err or sys.stderr
    python = python or sys.executable
    for label, value, least in (("workers", n_workers, 1), ("servers", n_servers, 1)):
        if isinstance(value, bool) or int(value) != value or value < least:
            raise ValueError(f"the number of {label} must be a positive integer, got {value!r}")
    if timeout is not None and not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if isinstance(command, str):
        command = shlex.split(command)
    command = list(command)
    if not command:
        raise ValueError("no command to run: give it after --")
    if port is not None and hosts is None and not port_is_free(port):
        _say(err, f"port {port} on 127.0.0.1 is taken (another job, or an orphan of one?); choose another "
                  f"port or leave it out to get a free one")
        return 1
    deadline = None if timeout is None else time.monotonic() + timeout
    for attempt in range(retries + 1):
        job = _Job(n_workers, n_servers, command, hosts, port, python, grace, err, deadline)
        status = job.run()
        if status != _RETRY or port is not None or attempt == retries:
            if status == _RETRY:
                _say(err, f"the scheduler could not bind port {job.port} (taken); the job was stopped")
                return 1
            return status
        _say(err, f"port {job.port} was taken before the scheduler bound it; retrying on another port")
    return 1


_RETRY = object()


def _say(err, message):
    print(f"hmmop launch: {message}", file=err, flush=True)


# Each child starts through this (a bare Python, no site): it asks the kernel for SIGKILL when the
# launcher dies (PR_SET_PDEATHSIG, kept across exec), so that a launcher killed outright leaves no
# orphan behind, then execs the real command.  Not a preexec_fn: with one, subprocess must fork(),
# and MXNet's pthread_atfork handler (it stops the engine, joining its threads) deadlocks in a
# process that has done MXNet work - launch() called after a fit hung there for good.
_EXEC = """
import ctypes, os, sys
try:
    ctypes.CDLL(None).prctl(1, 9)                   # PR_SET_PDEATHSIG, SIGKILL
except Exception:                                   # not Linux: the launcher's handlers still apply
    pass
if os.getppid() != int(sys.argv[1]):                # the launcher died before prctl
    os._exit(1)
try:
    os.execvp(sys.argv[3], sys.argv[3:])
except OSError as exc:
    print(f"hmmop launch: cannot start {sys.argv[2]}: {sys.argv[3]}: {exc.strerror}", file=sys.stderr)
    os._exit(127)
"""


class _Job:
    def __init__(self, n_workers, n_servers, command, hosts, port, python, grace, err, deadline):
        self.n_workers, self.n_servers, self.command = int(n_workers), int(n_servers), command
        self.hosts, self.python, self.grace, self.err, self.deadline = hosts, python, grace, err, deadline
        if hosts:
            self.root = os.environ.get("HMMOP_LAUNCH_ADDRESS") or socket.gethostbyname(socket.gethostname())
        else:
            self.root = "127.0.0.1"
        self.port = port or free_port(self.root if not hosts else "")
        self.processes = []
        self.scheduler_log = []
        self.stop_signal = None

    def env(self, role, host, extra):
        env = dict(os.environ, **extra)
        env.update(DMLC_ROLE=role, DMLC_PS_ROOT_URI=self.root, DMLC_PS_ROOT_PORT=str(self.port),
                   DMLC_NUM_SERVER=str(self.n_servers), DMLC_NUM_WORKER=str(self.n_workers))
        if not self.hosts:          # all on this machine: over loopback
            env.update(DMLC_NODE_HOST="127.0.0.1", DMLC_INTERFACE="lo")
        return env

    def start(self, label, role, argv, host=None, capture=False, extra=None):
        env = self.env(role, host, extra or {})
        if host is not None:
            names = [k for k in env if k.startswith("DMLC_") or k in ("PYTHONPATH", "HMMOP_WORKER")]
            remote = " ".join([f"cd {shlex.quote(os.getcwd())} &&", "env"]
                              + [f"{k}={shlex.quote(env[k])}" for k in names]
                              + [shlex.quote(a) for a in argv])
            argv = ["ssh", "-tt", "-o", "BatchMode=yes", host, remote]
        if shutil.which(argv[0]) is None:
            raise OSError(f"cannot start {label}: {argv[0]}: No such file or directory (or not executable); "
                          f"the job was stopped")
        popen = subprocess.Popen([sys.executable, "-S", "-c", _EXEC, str(os.getpid()), label, *argv], env=env,
                                 start_new_session=True, stdin=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE if capture else None, text=capture or None)
        process = _Process(label, popen, host)
        self.processes.append(process)
        if capture:     # the scheduler: its errors are echoed and kept (to tell a taken port)
            threading.Thread(target=self._echo, args=(popen.stderr,), daemon=True).start()
        return process

    def _echo(self, stream):
        for line in stream:
            self.scheduler_log.append(line)
            self.err.write(line)
        stream.close()

    def run(self):
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        in_main = threading.current_thread() is threading.main_thread()

        def stop(signum, frame):
            self.stop_signal = signum

        try:
            if in_main:
                for s in previous:
                    signal.signal(s, stop)
            server_code = [self.python, "-c", _SERVER_CODE]
            self.start("scheduler", "scheduler", server_code, capture=True)
            hosts = self.hosts or [None]
            for i in range(self.n_servers):
                self.start(f"server {i}", "server", server_code, hosts[i % len(hosts)])
            for i in range(self.n_workers):
                self.start(f"worker {i}", "worker", self.command, hosts[i % len(hosts)],
                           extra={"HMMOP_WORKER": str(i)})
            return self.watch()
        except BaseException:
            self.stop_all()
            raise
        finally:
            if in_main:
                for s, handler in previous.items():
                    signal.signal(s, handler)

    def watch(self):
        workers = [p for p in self.processes if p.label.startswith("worker")]
        ended = {}
        while True:
            if self.stop_signal is not None:
                self.stop_all()
                name = signal.Signals(self.stop_signal).name
                _say(self.err, f"got {name}; the job was stopped")
                return 128 + self.stop_signal
            for p in self.processes:
                status = p.popen.poll()
                if status is None:
                    continue
                if p.label.startswith("worker") and status == 0:
                    continue
                if status == 0:
                    # The scheduler and servers end once the workers have left the job; a worker
                    # may take a moment to exit after that.  Much longer: it was not the workers.
                    ended.setdefault(p.label, time.monotonic())
                    if time.monotonic() - ended[p.label] > self.grace + 5.0:
                        self.stop_all()
                        running = ", ".join(w.label for w in workers if w.popen.poll() is None)
                        _say(self.err, f"{p.label} ended before the workers were done ({running} still "
                                       f"running); the job was stopped")
                        return 1
                    continue
                self.stop_all()
                if p.label == "scheduler" and any("bind" in line.lower() for line in self.scheduler_log):
                    return _RETRY
                how = f" (killed by {signal.Signals(-status).name})" if status < 0 and \
                    -status in signal.valid_signals() else ""
                where = f" on {p.host}" if p.host else ""
                _say(self.err, f"{p.label}{where} exited with status {status}{how}; the job was stopped")
                return status if status > 0 else 1
            if all(w.popen.poll() == 0 for w in workers):
                # The workers are done: the scheduler and servers end by themselves; wait a little.
                end = time.monotonic() + max(self.grace, 5.0)
                while time.monotonic() < end and any(p.popen.poll() is None for p in self.processes):
                    time.sleep(0.05)
                left = [p.label for p in self.processes if p.popen.poll() is None]
                self.stop_all()
                if left:
                    _say(self.err, f"the workers finished but {', '.join(left)} did not end; stopped")
                return 0
            if self.deadline is not None and time.monotonic() > self.deadline:
                running = [p.label for p in self.processes if p.popen.poll() is None]
                self.stop_all()
                _say(self.err, f"the job passed its timeout with {', '.join(running) or 'nothing'} still "
                               f"running; the job was stopped")
                return 124
            time.sleep(0.05)

    def stop_all(self):
        """SIGTERM to every process group, SIGKILL after ``grace`` seconds; reap every process."""
        for sig, wait in ((signal.SIGTERM, self.grace), (signal.SIGKILL, 5.0)):
            for p in self.processes:
                try:
                    os.killpg(p.popen.pid, sig)      # its group: also whatever it started
                except (ProcessLookupError, PermissionError):
                    pass
            end = time.monotonic() + wait
            while time.monotonic() < end and any(p.popen.poll() is None for p in self.processes):
                time.sleep(0.02)
        for p in self.processes:
            try:
                p.popen.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
