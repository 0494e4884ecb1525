#!/usr/bin/env python3
"""Run a manifest through paligemma_ray.py on a local two-actor Ray instance and SIGKILL one
actor's `paligemma` process while it holds unfinished requests.

To kill at a known point rather than at a guessed time, one image (--slow) is served through a
named pipe: the actor that reaches it blocks on the read. Once some answers are written and an
actor holds the pipe, the driver kills that actor's `paligemma` process, then lets the image
through. The actor finds its engine gone, exits, and Ray restarts it and redoes its batches.

The manifest's image paths must be relative: the Ray run reads them from a directory of links
to --images (the slow one replaced by the pipe), so the answers' `image` fields are those of a
plain `paligemma generate --input` run from --images, and the two outputs compare line by line
(CLITests' RayTests does that comparison). Prints one JSON object: the tool's exit status, the
killed pid, the answers written before the kill, whether the restart was logged.

Example:
  python3 tools/ray/kill_test.py --paligemma .build/release/paligemma --model Models/demo \\
      --input manifest.jsonl --images Tests/Fixtures/demo --slow scene013.png \\
      --output ray.jsonl --work /tmp/kill-test
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

TOOL = Path(__file__).resolve().parent / "paligemma_ray.py"


def descendants(root):
    """Pids of every process below `root`, from /proc (Linux)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                # The command name may hold spaces and parentheses: the fields follow the last ')'.
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry))
    found, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def holds(pid, path):
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") == path for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


def command_line(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def line_count(path):
    try:
        with open(path, "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paligemma", required=True, help="the paligemma binary")
    parser.add_argument("--model", required=True, help="model directory")
    parser.add_argument("--input", required=True, type=Path, help="manifest with image paths relative to --images")
    parser.add_argument("--images", required=True, type=Path, help="directory the manifest's images are in")
    parser.add_argument("--slow", required=True, help="the image (relative path) to serve through a pipe")
    parser.add_argument("--output", required=True, type=Path, help="JSON-lines answers of the Ray run")
    parser.add_argument("--work", required=True, type=Path, help="scratch directory (created)")
    parser.add_argument("--min-answers", type=int, default=4, help="answers written before the kill (default 4)")
    parser.add_argument("--timeout", type=float, default=240, help="seconds for the whole run before it is stopped as hung (default 240)")
    args = parser.parse_args()
    args.input, args.images, args.output, args.work = (p.resolve() for p in (args.input, args.images, args.output, args.work))
    if not sys.platform.startswith("linux"):
        sys.exit("kill_test.py finds processes through /proc: Linux only")

    images = args.work / "images"
    images.mkdir(parents=True, exist_ok=True)
    for source in args.images.resolve().rglob("*"):
        if source.is_file():
            link = images / source.relative_to(args.images.resolve())
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to(source)
    pipe = images / args.slow
    source_of_slow = args.images / args.slow
    content = source_of_slow.read_bytes()
    pipe.unlink()
    os.mkfifo(pipe)

    held, release, stop = threading.Event(), threading.Event(), threading.Event()

    def serve_pipe():
        # Opening for writing waits for the first reader, which is then held until the kill. Later
        # readers (the retry) find the plain file: a pipe reopened for each reader could feed a
        # slow one two copies before it sees the end of the first.
        with open(pipe, "wb") as f:
            if stop.is_set():
                return
            held.set()
            release.wait()
            replacement = pipe.with_name(pipe.name + ".link")
            replacement.symlink_to(source_of_slow)
            os.replace(replacement, pipe)
            try:
                f.write(content)
            except BrokenPipeError:
                pass  # the reader died first; its retry reads the plain file

    threading.Thread(target=serve_pipe, daemon=True).start()

    log = open(args.work / "tool.log", "wb")
    tool = subprocess.Popen(
        [sys.executable, str(TOOL), "--input", str(args.input), "--output", str(args.output),
         "--base-dir", str(images), "--paligemma", args.paligemma, "--model", args.model,
         "--num-cpus", "2", "--actors", "2", "--cpus-per-actor", "1", "--threads", "1", "--batch-size", "4",
         "--startup-timeout", "60", "--request-timeout", "60", "--max-restarts", "2"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + args.timeout
    report = {"killed_pid": None, "answers_before_kill": None}

    def give_up(reason):
        os.killpg(tool.pid, signal.SIGKILL)
        tool.wait()
        stop.set()
        release.set()
        tail = (args.work / "tool.log").read_text(errors="replace")[-4000:]
        sys.exit(f"kill_test: {reason}\n--- the tool's log, last lines ---\n{tail}")

    while report["killed_pid"] is None:
        if tool.poll() is not None:
            give_up(f"the tool exited ({tool.returncode}) before the kill")
        if time.monotonic() > deadline:
            give_up("timed out waiting for answers and a reader of the slow image")
        written = line_count(args.output)
        if held.is_set() and written >= args.min_answers:
            below = descendants(tool.pid)
            reader = next((p for p in below if holds(p, str(pipe))), None)
            engines = [p for p in descendants(reader) if b"serve" in command_line(p)] if reader else []
            if engines:
                os.kill(engines[0], signal.SIGKILL)
                report.update(killed_pid=engines[0], answers_before_kill=line_count(args.output))
                break
        time.sleep(0.05)
    release.set()
    try:
        tool.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        give_up("timed out after the kill")
    stop.set()
    try:  # wake the pipe's server if it waits for a reader
        os.close(os.open(pipe, os.O_RDONLY | os.O_NONBLOCK))
    except OSError:
        pass
    text = (args.work / "tool.log").read_text(errors="replace")
    report.update(status=tool.returncode, restart_logged="exiting this actor so that Ray restarts it" in text)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
