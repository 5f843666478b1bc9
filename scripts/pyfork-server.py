"""A fork server for the test run's Python: it imports torch once, and each
`scripts/pyfork-python ARGS` (what scripts/test.sh gives the tests as
CE_PYTHON) then runs as a fork of it, so that a test's PyTorch reference
starts in milliseconds instead of the 2 s of CPU that importing torch costs
(about 90 Python runs in a test run, most of them ranks of a DDP job).

    python scripts/pyfork-server.py SOCKET

What a run sees is what `python ARGS` would give it: its argv, working
directory, environment, stdin/stdout/stderr (the client's own descriptors,
passed over the Unix socket), `__main__`, `sys.path[0]`, and its exit status
or the signal that ended it (the client forwards the signals it gets, and
a client that dies takes its run with it). What a fork cannot redo is what
libraries read once when they load: of that, OMP_NUM_THREADS is what the
tests set (the ranks run one thread each, as torchrun's do), so a run that
sets it gets `torch.set_num_threads` of it; and the seeds a fresh import
draws from the OS (torch's CPU generator, `random`, NumPy's), each run draws
again. The one thing that stays the server's is the hash seed of str (a
fresh interpreter draws its own, unless PYTHONHASHSEED is set), so a run
must not depend on the order of a set of strings. Nothing here touches a
device before a fork.

One connection is one run. The server forks a manager for it, the manager
forks the run and waits for the run's exit or the client's hang-up.
"""

import io
import json
import os
import select
import signal
import socket
import struct
import sys

# The thread count a run gets when it does not set OMP_NUM_THREADS: the
# default of a Python started without it, whatever started this server.
for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.pop(name, None)

import torch  # noqa: E402  (the point of the server)

for module in ("numpy", "torch.distributed", "safetensors.torch"):
    try:
        __import__(module)
    except ImportError:
        pass

DEFAULT_THREADS = torch.get_num_threads()
ENCODING = sys.stdout.encoding


def recv_exact(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def run(request):
    """In the forked run: become `python ARGV` and never return."""
    import runpy
    import traceback
    import types

    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    # A fresh import seeds torch's CPU generator (and Python's and NumPy's)
    # from the OS: so does each run, instead of sharing the server's seed.
    torch.default_generator.seed()
    import random

    random.seed()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    threads = os.environ.get("OMP_NUM_THREADS", "")
    torch.set_num_threads(int(threads) if threads.isdigit() and int(threads) > 0 else DEFAULT_THREADS)
    # The standard streams again on descriptors 0-2 (the client's now), as
    # the interpreter makes them at start-up.
    # PYTHONUNBUFFERED and PYTHONDONTWRITEBYTECODE are the start-up
    # variables a run may set that matter here: they are applied again.
    unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))
    sys.dont_write_bytecode = bool(os.environ.get("PYTHONDONTWRITEBYTECODE"))

    def writer(fd, errors, line_buffering):
        raw = io.FileIO(fd, "w", closefd=False)
        return io.TextIOWrapper(
            raw if unbuffered else io.BufferedWriter(raw),
            encoding=ENCODING,
            errors=errors,
            line_buffering=line_buffering,
            write_through=unbuffered,
        )

    sys.stdin = open(0, "r", encoding=ENCODING, closefd=False)
    sys.stdout = writer(1, "strict", os.isatty(1))
    sys.stderr = writer(2, "backslashreplace", True)
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr
    argv = request["argv"]
    code = 0
    try:
        if argv[0] == "-c":
            sys.argv = ["-c"] + argv[2:]
            sys.path[0] = ""
            main = types.ModuleType("__main__")
            main.__dict__["__builtins__"] = __builtins__
            sys.modules["__main__"] = main
            exec(compile(argv[1], "<string>", "exec"), main.__dict__)
        else:
            sys.argv = list(argv)
            sys.path[0] = os.path.dirname(os.path.abspath(argv[0]))
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as e:
        if e.code is None:
            code = 0
        elif isinstance(e.code, int):
            code = e.code
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:
        traceback.print_exc()
        sys.stderr.flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    except BaseException:
        traceback.print_exc()
        code = 1
    # The interpreter's own shutdown: threads, atexit, then the streams (a
    # stdout that cannot be flushed is status 120, as Python's).
    try:
        import threading

        threading._shutdown()
        import atexit

        atexit._run_exitfuncs()
    except BaseException:
        traceback.print_exc()
    try:
        sys.stdout.flush()
    except Exception:
        code = 120
    try:
        sys.stderr.flush()
    except Exception:
        pass
    os._exit(code & 0xFF)


def manage(conn):
    """In the manager: read the request, fork the run, report its end."""
    header, fds, _, _ = socket.recv_fds(conn, 8, 3)
    if len(header) < 8 or len(fds) != 3:
        os._exit(1)
    (length,) = struct.unpack("<Q", header)
    request = json.loads(recv_exact(conn, length))
    pid = os.fork()
    if pid == 0:
        conn.close()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        run(request)
    for fd in fds:
        os.close(fd)
    conn.sendall(struct.pack("<q", pid))
    pidfd = os.pidfd_open(pid)
    while True:
        ready, _, _ = select.select([pidfd, conn], [], [])
        if pidfd in ready:
            _, status = os.waitpid(pid, 0)
            try:
                conn.sendall(struct.pack("<q", status))
            except OSError:
                pass
            os._exit(0)
        if conn in ready and not conn.recv(1):
            # The client is gone (killed): so is its run.
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os._exit(0)


def main():
    path = sys.argv[1]
    parent = os.getppid()
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(64)
    server.settimeout(1.0)
    sys.stdout.flush()
    sys.stderr.flush()
    while os.getppid() == parent:  # ends with the test run that started it
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            pass
        try:
            conn, _ = server.accept()
        except socket.timeout:
            continue
        conn.settimeout(None)
        if os.fork() == 0:
            server.close()
            try:
                manage(conn)
            except BaseException:
                import traceback

                traceback.print_exc()
            os._exit(1)
        conn.close()
    os.unlink(path)


if __name__ == "__main__":
    main()
