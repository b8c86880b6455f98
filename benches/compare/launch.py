"""Runs one command and reports its wall time and peak RSS, for run.py.

    python -I -S launch.py STDOUT_FILE STDERR_FILE COMMAND [ARG]...

Prints `exit_code wall_seconds max_rss_kib` on its own standard output; the
command's output goes to the two files.

Why a launcher: Linux keeps a process's peak RSS (ru_maxrss) across exec,
and a child starts from its parent's memory (fork copies it, vfork and
posix_spawn share it), so a command started straight from run.py, which
has DuckDB loaded for its checks, would report at least run.py's own peak.
Started from this small process (`-S`: no site packages) it carries only a
few MiB, which run.py measures (the launcher floor) and reports.
"""

import os
import sys
import time


def main() -> None:
    out, err, cmd = sys.argv[1], sys.argv[2], sys.argv[3:]
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fds = (os.open(os.devnull, os.O_RDONLY), os.open(out, flags, 0o644), os.open(err, flags, 0o644))
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
            os.execvp(cmd[0], cmd)
        except OSError as e:
            os.write(2, f"launch.py: {cmd[0]}: {e}\n".encode())
        os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    # ru_maxrss is in KiB on Linux, in bytes on macOS.
    rss = usage.ru_maxrss // 1024 if sys.platform == "darwin" else usage.ru_maxrss
    print(os.waitstatus_to_exitcode(status), f"{wall:.6f}", rss)


if __name__ == "__main__":
    main()
