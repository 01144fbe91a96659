"""Data-parallel training over the dist_sync kvstore, run as a user runs it: ``hmmop launch`` on
loopback, in subprocesses.  Each job starts a scheduler, servers and workers (about 5-8 s on a
2-core machine, mostly importing MXNet five times); training itself takes well under a second.
"""
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from hmmop import HMM
from hmmop.fit import distributed
from hmmop.cli.files import read_sequences

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRADIENT = dict(method="gradient", optimizer="sgd", learning_rate=2.0, epochs=40, progress=False)
EM = dict(method="em", epochs=30, progress=False)

# A worker: fits the data file by gradient and by EM as one worker of the job, and saves what it
# got, per rank.  Every worker starts from ITS OWN random parameters (seed + rank): the fit must
# make them start from rank 0's.
WORKER = textwrap.dedent("""
    import os, sys
    import numpy as np
    from hmmop import HMM
    from hmmop.fit import distributed
    data, out, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    seqs = [[int(x) for x in line.split()] for line in open(data)]
    kv = distributed.kvstore()
    with open(f"{out}-pid-{kv.rank}", "w") as f:
        f.write(f"{os.getpid()} {os.environ['HMMOP_WORKER']}")
    results = {}
    labels = LABELS(seqs)
    for name, options in (("gradient", GRADIENT), ("em", EM), ("gradient_labels", dict(GRADIENT, labels=labels)),
                          ("em_labels", dict(EM, labels=labels))):
        model = HMM(3, 5, seed=seed + kv.rank)
        history = model.fit(seqs, kvstore="dist_sync", **options)
        results.update({f"{name}_{k}": v for k, v in zip("A B pi".split(), model.probabilities())})
        results[f"{name}_history"] = history
    # shard=False: each worker passes its own part (here the same split, so the same result).
    mine = [seqs[i] for i in distributed.shard([len(s) for s in seqs], kv.rank, kv.num_workers)]
    model = HMM(3, 5, seed=seed + kv.rank)
    model.fit(mine, kvstore="dist_sync", shard=False, **GRADIENT)
    results["own_A"] = model.probabilities()[0]
    # Minibatches of 4 of each worker's sequences (the workers have different numbers of them).
    model = HMM(3, 5, seed=seed + kv.rank)
    results["mini_history"] = model.fit(seqs, kvstore="dist_sync", batch_size=4, seed=kv.rank, **GRADIENT)
    results["mini_A"] = model.probabilities()[0]
    np.savez(f"{out}-{kv.rank}.npz", rank=kv.rank, workers=kv.num_workers, **results)
""").replace("GRADIENT", repr(GRADIENT)).replace("EM", repr(EM)).replace(
    "LABELS(seqs)", "[[(x + t) % 3 if t % 7 == 0 else -1 for t, x in enumerate(s)] for s in seqs]")


def labels_of(seqs):
    """The known states WORKER gives its labelled fits: every 7th step (the expression above)."""
    return [[(x + t) % 3 if t % 7 == 0 else -1 for t, x in enumerate(s)] for s in seqs]

# A worker that trains for a long time (to be killed in the middle).
LONG = textwrap.dedent("""
    import os, sys
    import numpy as np
    from hmmop import HMM
    from hmmop.fit import distributed
    out = sys.argv[1]
    kv = distributed.kvstore()
    with open(f"{out}-pid-{kv.rank}", "w") as f:
        f.write(f"{os.getpid()} {os.environ['HMMOP_WORKER']}")
    seqs = [np.arange(50) % 5] * 20
    HMM(3, 5, seed=0).fit(seqs, kvstore="dist_sync", epochs=10 ** 6, progress=False)
""")


def sequences(seed=3, n=41):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 5, size=k).tolist() for k in rng.integers(3, 80, size=n)]


def write_data(path, seqs):
    path.write_text("".join(" ".join(map(str, s)) + "\n" for s in seqs))
    return str(path)


def proc_stats():
    """(pid, fields of /proc/PID/stat after the command name: state, ppid, pgrp, ...) of every process."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    yield int(entry), f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue


def group_leaders_under(pid):
    """Pids of the processes whose parent is pid and that lead their own process group (from /proc).
    The launcher starts each job process so; anything else it runs for a moment is left out (on
    Python 3.12, importing MXNet imports scikit-learn, and scikit-learn 1.9 runs `lscpu` at import)."""
    return [p for p, fields in proc_stats() if int(fields[1]) == pid and int(fields[2]) == p]


def alive_in_groups(groups):
    """(pid, process group) of every live (non-zombie) process in one of the groups."""
    return [(p, int(fields[2])) for p, fields in proc_stats() if int(fields[2]) in groups and fields[0] != "Z"]


class Launch:
    """`python -m hmmop launch ARGS` in a session of its own; records its children's process groups."""

    def __init__(self, *args, cwd=None):
        self.popen = subprocess.Popen([sys.executable, "-m", "hmmop", "launch", *map(str, args)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
                                      start_new_session=True)
        self.groups = set()

    def watch(self, timeout=120, until=None):
        """Wait for the launcher (or for until() to be true); returns True if it ended."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.groups.update(group_leaders_under(self.popen.pid))
            if self.popen.poll() is not None:
                return True
            if until is not None and until():
                return False
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"the launcher did not end within {timeout} s")

    def finish(self, timeout=120):
        self.watch(timeout)
        out, err = self.popen.communicate(timeout=10)
        return self.popen.returncode, out, err

    def kill(self):
        for group in self.groups | {self.popen.pid}:
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.popen.communicate(timeout=10)


def assert_none_left(groups):
    """No live process in the job's process groups (any found is killed, then the test fails)."""
    left = alive_in_groups(groups)
    for _, group in left:
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert left == [], "processes of the job were left running"


def pid_of(path):
    return int(open(path).read().split()[0])


def python_command(script, *args):
    return ["--", sys.executable, "-c", script, *map(str, args)]


def assert_agree(got, want, rtol=1e-5):
    np.testing.assert_allclose(got, want, rtol=rtol, atol=0)


def test_two_workers_equal_one_process_full_batch(tmp_path):
    seqs = sequences()
    data = write_data(tmp_path / "data.txt", seqs)
    out = str(tmp_path / "run")
    job = Launch("-n", 2, "--timeout", 120, *python_command(WORKER, data, out, 7))
    status, _, err = job.finish()
    assert status == 0, err[-3000:]
    runs = [np.load(f"{out}-{rank}.npz") for rank in (0, 1)]
    assert [int(r["workers"]) for r in runs] == [2, 2]
    labels = labels_of(seqs)
    for name, options in (("gradient", GRADIENT), ("em", EM), ("gradient_labels", dict(GRADIENT, labels=labels)),
                          ("em_labels", dict(EM, labels=labels))):
        single = HMM(3, 5, seed=7)                   # rank 0's start
        history = single.fit(seqs, **options)
        for key, want in zip(("A", "B", "pi"), single.probabilities()):
            a, b = runs[0][f"{name}_{key}"], runs[1][f"{name}_{key}"]
            np.testing.assert_array_equal(a, b, err_msg=f"{name} {key}: the workers differ")
            assert_agree(a, want)
        assert_agree(runs[0][f"{name}_history"], history)
        np.testing.assert_array_equal(runs[0][f"{name}_history"], runs[1][f"{name}_history"])
    np.testing.assert_array_equal(runs[0]["own_A"], runs[0]["gradient_A"])
    for key in ("mini_A", "mini_history"):
        np.testing.assert_array_equal(runs[0][key], runs[1][key])
    assert len(runs[0]["mini_history"]) == GRADIENT["epochs"]
    assert_none_left(job.groups)


def test_cli_fit_with_two_servers(tmp_path):
    seqs = sequences(seed=4, n=30)
    data = write_data(tmp_path / "data.txt", seqs)
    options = ["--states", 3, "--tokens", "ints", "--epochs", 30, "--tol", 0, "--seed", 2]
    job = Launch("-n", 2, "-s", 2, "--timeout", 120, "--", sys.executable, "-m", "hmmop", "fit", data,
                 *options, "--kvstore", "dist_sync", "--out", "m.npz", cwd=tmp_path)
    status, _, err = job.finish()
    assert status == 0, err[-3000:]
    assert err.count("model written to m.npz") == 1, err       # rank 0 alone writes and reports
    assert "2 workers (dist_sync)" in err
    model = HMM.load(str(tmp_path / "m.npz"))
    # The same fit in one process, as `hmmop fit` makes it (adam, lr 0.1).
    rows, _, _ = read_sequences(data, "ints")
    single = HMM(3, 5, seed=2, tokens="ints")
    single.fit(rows, optimizer="adam", learning_rate=0.1, epochs=30, tol=0, seed=2)
    for got, want in zip(model.probabilities(), single.probabilities()):
        assert_agree(got, want)
    assert_none_left(job.groups)


def test_a_killed_worker_stops_the_job(tmp_path):
    out = str(tmp_path / "run")
    job = Launch("-n", 2, "--timeout", 120, *python_command(LONG, out))
    pids = [f"{out}-pid-{rank}" for rank in (0, 1)]
    ended = job.watch(timeout=90, until=lambda: all(os.path.exists(p) and os.path.getsize(p) for p in pids))
    assert not ended, job.popen.communicate()[1][-3000:]
    time.sleep(1.0)                                             # training
    environ = open(f"/proc/{pid_of(pids[0])}/environ", "rb").read().split(b"\0")
    port = int(next(v for v in environ if v.startswith(b"DMLC_PS_ROOT_PORT=")).split(b"=")[1])
    assert not distributed.port_is_free(port)                  # the scheduler holds it
    pid, index = open(pids[1]).read().split()
    os.kill(int(pid), signal.SIGKILL)
    killed = time.monotonic()
    status, _, err = job.finish(timeout=30)
    took = time.monotonic() - killed
    assert status != 0
    assert f"hmmop launch: worker {index} exited with status -9 (killed by SIGKILL); the job was stopped" \
        in err, err[-3000:]
    assert took < 5, f"the launcher took {took:.1f} s to stop the job"
    assert len(job.groups) == 4                                 # scheduler, server, 2 workers
    assert_none_left(job.groups)
    assert distributed.port_is_free(port)


# A worker that fails in the middle of training, in its own code (a callback).
FAILING = textwrap.dedent("""
    import sys
    import numpy as np
    from hmmop import HMM
    from hmmop.fit import distributed
    kv = distributed.kvstore()
    def fail(epoch, value):
        if kv.rank == 1 and epoch == 20:
            if sys.argv[1] == "raise":
                raise RuntimeError("this worker fails")
            sys.exit(3)
    HMM(3, 5, seed=0).fit([np.arange(50) % 5] * 20, kvstore="dist_sync", epochs=10 ** 6, progress=False,
                          callback=fail)
""")


@pytest.mark.parametrize("how", ["raise", pytest.param("exit", marks=pytest.mark.slow)])
def test_a_worker_failing_mid_job_stops_it(how):
    # Left to the interpreter's normal exit, the failing worker would wait for the others in
    # ps-lite's final barrier, and they for its gradients: a hang the launcher cannot see.
    job = Launch("-n", 2, "--timeout", 30, *python_command(FAILING, how))
    status, _, err = job.finish(timeout=90)
    assert "passed its timeout" not in err, err[-3000:]
    expected = 1 if how == "raise" else 3
    assert status == expected, err[-3000:]
    assert re.search(rf"hmmop launch: worker [01] exited with status {expected}; the job was stopped", err)
    if how == "raise":
        assert "RuntimeError: this worker fails" in err
    assert_none_left(job.groups)


@pytest.mark.slow       # another whole job (~7 s)
def test_hosts_file_through_a_stand_in_for_ssh(tmp_path, monkeypatch):
    # No second machine here: a stand-in `ssh` first on PATH runs the remote command line
    # locally (so only the launcher's side of --hosts is tested: the command and its quoting).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "ssh"
    fake.write_text('#!/bin/sh\n'
                    'while [ "${1#-}" != "$1" ]; do [ "$1" = -o ] && shift; shift; done\n'
                    'echo "$1" >> "$(dirname "$0")/hosts-used"; shift\n'
                    'exec sh -c "$1"\n')
    fake.chmod(0o755)
    (tmp_path / "hosts.txt").write_text("# two names for this machine\nnode-a\nnode-b  # a comment\n")
    data = write_data(tmp_path / "my data.txt", sequences(n=12))       # a space: quoting
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("HMMOP_LAUNCH_ADDRESS", "127.0.0.1")
    monkeypatch.setenv("DMLC_NODE_HOST", "127.0.0.1")            # forwarded like every DMLC_ variable
    monkeypatch.setenv("DMLC_INTERFACE", "lo")
    job = Launch("-n", 2, "--hosts", "hosts.txt", "--timeout", 120, "--", sys.executable, "-m", "hmmop", "fit",
                 data, "--states", 2, "--tokens", "ints", "--epochs", 5, "--kvstore", "dist_sync", "--out", "m.npz",
                 cwd=tmp_path)
    status, _, err = job.finish()
    assert status == 0, err[-3000:]
    assert sorted((bin_dir / "hosts-used").read_text().split()) == ["node-a", "node-a", "node-b"]
    assert HMM.load(str(tmp_path / "m.npz")).n_states == 2
    assert_none_left(job.groups)


@pytest.mark.slow       # another whole job (~6 s): the same watchdog as for a worker
def test_a_killed_server_stops_the_job(tmp_path):
    out = str(tmp_path / "run")
    job = Launch("-n", 2, "--timeout", 120, *python_command(LONG, out))
    pids = [f"{out}-pid-{rank}" for rank in (0, 1)]
    job.watch(timeout=90, until=lambda: all(os.path.exists(p) and os.path.getsize(p) for p in pids))
    time.sleep(1.0)
    server = [pid for pid in job.groups
              if b"DMLC_ROLE=server" in open(f"/proc/{pid}/environ", "rb").read().split(b"\0")]
    assert len(server) == 1
    os.kill(server[0], signal.SIGKILL)
    status, _, err = job.finish(timeout=30)
    assert status == 1
    assert "hmmop launch: server 0 exited with status -9 (killed by SIGKILL); the job was stopped" in err, err
    assert_none_left(job.groups)


def test_a_command_that_cannot_start_is_a_clear_error():
    job = Launch("-n", 2, "--", "no-such-program-here", "--x")
    status, _, err = job.finish(timeout=60)
    assert status == 1
    assert "hmmop launch: error: cannot start worker 0: no-such-program-here: No such file or directory" in err
    assert_none_left(job.groups)


def test_a_worker_failing_at_start_stops_the_job(tmp_path):
    data = write_data(tmp_path / "data.txt", sequences(n=5))
    job = Launch("-n", 2, "--timeout", 120, "--", sys.executable, "-m", "hmmop", "fit", data, "--states", 0,
                 "--kvstore", "dist_sync", cwd=tmp_path)
    status, _, err = job.finish()
    assert status == 2, err
    assert "hmmop fit: error: argument --states: expected a positive integer, got 0" in err
    assert re.search(r"hmmop launch: worker [01] exited with status 2; the job was stopped", err), err
    assert_none_left(job.groups)


def test_a_taken_port_is_a_clear_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        job = Launch("-n", 1, "--port", port, *python_command("pass"))
        status, _, err = job.finish()
    assert status == 1
    assert f"hmmop launch: port {port} on 127.0.0.1 is taken" in err
    assert job.groups == set()                      # nothing was started


# launch() from Python, in a process that has done MXNet work, with a port taken between choosing
# it and the scheduler's bind.  The first trap: starting a child with fork() there deadlocks in
# MXNet's atfork handler (it joins the engine's threads) - launch() once hung for good.
AFTER_A_FIT = textwrap.dedent("""
    import socket, sys
    import numpy as np
    import hmmop
    from hmmop import HMM
    from hmmop.fit import distributed
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, 20, size=300) for _ in range(100)]
    HMM(8, 20, seed=0).fit(seqs, epochs=3, optimizer="adam", learning_rate=0.05, progress=False)
    hmmop.set_num_threads(1)
    HMM(8, 20, seed=0).fit(seqs, epochs=3, progress=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        print(taken, flush=True)
        ports = iter([taken])
        real = distributed.free_port
        distributed.free_port = lambda host="127.0.0.1": next(ports, None) or real(host)
        sys.exit(distributed.launch(1, 1, [sys.executable, "-c",
                                           "from hmmop.fit import distributed; distributed.kvstore()"], timeout=60))
""")


def test_launch_after_mxnet_work_and_a_port_taken_after_it_was_chosen():
    run = subprocess.run([sys.executable, "-c", AFTER_A_FIT], capture_output=True, text=True, timeout=90)
    assert run.returncode == 0, run.stderr[-3000:]
    taken = int(run.stdout.split()[0])
    assert f"port {taken} was taken before the scheduler bound it; retrying on another port" in run.stderr


def test_the_timeout_stops_the_job(tmp_path):
    job = Launch("-n", 2, "--timeout", 2, "--", "sleep", 60)
    start = time.monotonic()
    status, _, err = job.finish(timeout=60)
    assert status == 124
    assert "hmmop launch: the job passed its timeout with" in err and "worker 0" in err, err
    assert time.monotonic() - start < 20
    assert_none_left(job.groups)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_ctrl_c_or_killing_the_launcher_ends_the_job(sig):
    job = Launch("-n", 2, "--timeout", 120, "--", "sleep", 60)
    job.watch(timeout=30, until=lambda: len(job.groups) == 4)
    time.sleep(0.5)
    os.kill(job.popen.pid, sig)
    status, _, err = job.finish(timeout=30)
    if sig == signal.SIGINT:
        assert status == 130 and "hmmop launch: got SIGINT; the job was stopped" in err, err
    end = time.monotonic() + 5              # SIGKILL: the kernel kills the children (PR_SET_PDEATHSIG)
    while alive_in_groups(job.groups) and time.monotonic() < end:
        time.sleep(0.05)
    assert_none_left(job.groups)


def test_a_fit_outside_a_job_says_how_to_start_one(monkeypatch):
    for name in ("DMLC_ROLE", "DMLC_PS_ROOT_URI", "DMLC_PS_ROOT_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(distributed.DistributedError, match="hmmop launch -n WORKERS"):
        HMM(2, 3, seed=0).fit([[0, 1, 2]], kvstore="dist_sync", epochs=2)
    with pytest.raises(ValueError, match="kvstore must be one of"):
        HMM(2, 3, seed=0).fit([[0, 1, 2]], kvstore="local", epochs=2)


def test_shards_are_balanced_by_symbols_and_deterministic():
    lengths = [int(x) for x in np.random.default_rng(0).integers(1, 1000, size=101)]
    for workers in (1, 2, 3, 8):
        parts = [distributed.shard(lengths, r, workers) for r in range(workers)]
        assert sorted(i for p in parts for i in p) == list(range(len(lengths)))    # a partition
        loads = [sum(lengths[i] for i in p) for p in parts]
        assert max(loads) - min(loads) <= max(lengths)
        assert parts == [distributed.shard(lengths, r, workers) for r in range(workers)]
    assert distributed.shard([5, 5], 1, 3) == [1] and distributed.shard([5, 5], 2, 3) == []
    with pytest.raises(ValueError):
        distributed.shard([1], 2, 2)
