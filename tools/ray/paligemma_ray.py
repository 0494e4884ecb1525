#!/usr/bin/env python3
"""Run a PaliGemma batch manifest on a Ray cluster, one `paligemma serve` per actor.

The manifest holds one request per row, as `paligemma generate --input` reads them:
{"id": "a", "image": "/shared/a.jpg", "prompt": "caption en", "max_new_tokens": 32}
(JSON lines, or a Parquet file with those columns). Image paths must be readable on every
node: a shared file system. Relative paths are taken from --base-dir.

Each actor starts one `paligemma serve` on 127.0.0.1 with a free port, holds the model in it
for its whole life and streams its rows to it over HTTP, keeping --in-flight requests queued
so the engine never waits for the next image to be read. By default one actor is placed per
node and given all of that node's CPUs (the engine's --threads).

Answers go to --output as they arrive, each as the JSON line `paligemma generate --input ...
--results ...` writes (the server adds queue_seconds and total_seconds to timings):
  out.jsonl    one line per answer, appended and flushed; `paligemma results merge` reads it
  out.parquet  a directory of part files: id, image, task, prompt, text, finish_reason,
               error, and `result` (the whole JSON line)

Faults: if a `paligemma` process dies or stops answering, its actor exits; Ray restarts the
actor (a fresh process, the model loaded again) and retries the batches it held, up to
--max-restarts per actor. Answers are deduplicated by id in the writer, so the output holds
exactly one answer per id however often a batch ran. A rerun with the same --output skips the
ids already answered there (as the CLI's --results does): a job that failed resumes.

Example (a local Ray instance on this machine, two actors of one core each):
  python3 tools/ray/paligemma_ray.py --input manifest.jsonl --output answers.jsonl \\
      --paligemma .build/release/paligemma --model Models/demo --num-cpus 2 --actors 2
On a cluster (`ray start` or KubeRay), run it on the head node or as a Ray job's entrypoint;
it joins the cluster that RAY_ADDRESS or --address names.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# The server announces itself with this line on stdout once it listens.
READY_PREFIX = "PaliGemma server on http://"


def dump(answer):
    """One answer line as the CLI writes them: sorted keys, compact, UTF-8 kept."""
    return json.dumps(answer, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


# --------------------------------------------------------------------------------------------
# The manifest


def read_manifest(path: Path, base_dir: Path):
    """Rows to run and answers already decided (bad lines), in the CLI's batch rules.

    Returns (requests, errors, notes): requests are dicts with id, image (as given), path
    (resolved), prompt, max_new_tokens (or -1); errors are finished answer dicts for lines that
    are not requests; repeated ids keep their first row, as the CLI does.
    """
    requests, errors, notes = [], [], []
    first_row = {}

    def add(number, row):
        if not isinstance(row, dict) or not isinstance(row.get("image"), str) or not isinstance(row.get("prompt"), str):
            errors.append({"id": f"line{number}", "image": "",
                           "error": f"{path}:{number}: expected {{\"image\": …, \"prompt\": …}}"})
            return
        ident = row.get("id")
        ident = f"line{number}" if ident is None else str(ident)
        if ident in first_row:
            notes.append(f"note: {path}:{number}: id '{ident}' repeats line {first_row[ident]}; answered once, for line {first_row[ident]}")
            return
        first_row[ident] = number
        tokens = row.get("max_new_tokens")
        image = row["image"]
        requests.append({"id": ident, "image": image, "path": str(base_dir / image),
                         "prompt": row["prompt"], "max_new_tokens": -1 if tokens is None else int(tokens)})

    if path.suffix == ".parquet" or path.is_dir():
        import pyarrow.parquet as pq
        table = pq.read_table(path)
        for number, row in enumerate(table.to_pylist(), start=1):
            add(number, {k: v for k, v in row.items() if v is not None})
        return requests, errors, notes
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                errors.append({"id": f"line{number}", "image": "", "error": f"{path}:{number}: the line is not valid UTF-8"})
                continue
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as e:
                errors.append({"id": f"line{number}", "image": "",
                               "error": f"{path}:{number}: expected {{\"image\": …, \"prompt\": …}} ({e})"})
                continue
            add(number, row)
    return requests, errors, notes


# --------------------------------------------------------------------------------------------
# The output: JSON lines (appended) or Parquet parts (written whole, then renamed)


class JsonlOutput:
    """Appends whole lines and flushes them to disk; a torn last line is cut, as the CLI does."""

    def __init__(self, path: Path):
        self.path = path
        self.answered = set()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "a+b")
        self.file.seek(0)
        data = self.file.read()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            self.file.truncate(keep)
            data = data[:keep]
        for line in data.splitlines():
            try:
                ident = json.loads(line).get("id")
            except (ValueError, AttributeError):
                continue
            if isinstance(ident, str):
                self.answered.add(ident)
        self.file.seek(0, os.SEEK_END)

    def write(self, lines):
        if lines:
            self.file.write("".join(line + "\n" for line in lines).encode("utf-8"))
            self.file.flush()
            os.fsync(self.file.fileno())

    def close(self):
        self.file.close()


class ParquetOutput:
    """A directory of part files, each written under a temporary name and renamed when whole,
    so a crash never leaves half a part behind."""

    COLUMNS = ("id", "image", "task", "prompt", "text", "finish_reason", "error", "result")

    def __init__(self, path: Path, rows_per_part: int):
        import pyarrow.parquet as pq
        self.path, self.rows_per_part = path, rows_per_part
        path.mkdir(parents=True, exist_ok=True)
        self.answered = set()
        parts = sorted(path.glob("part-*.parquet"))
        for part in parts:
            self.answered.update(pq.read_table(part, columns=["id"]).column("id").to_pylist())
        self.next_part = 1 + max((int(p.stem.split("-")[1]) for p in parts), default=-1)
        self.pending = []

    def write(self, lines):
        self.pending.extend(lines)
        if len(self.pending) >= self.rows_per_part:
            self.flush()

    def flush(self):
        import pyarrow as pa
        import pyarrow.parquet as pq
        if not self.pending:
            return
        rows = []
        for line in self.pending:
            answer = json.loads(line)
            row = {c: answer.get(c) for c in self.COLUMNS if c != "result"}
            row["result"] = line
            rows.append(row)
        table = pa.Table.from_pylist(rows, schema=pa.schema([(c, pa.string()) for c in self.COLUMNS]))
        final = self.path / f"part-{self.next_part:05d}.parquet"
        temporary = final.with_suffix(".parquet.tmp")
        pq.write_table(table, temporary)
        os.replace(temporary, final)
        self.next_part += 1
        self.pending = []

    def close(self):
        self.flush()


# --------------------------------------------------------------------------------------------
# The actor: one `paligemma serve` process on loopback


def _parent_death_signal():
    """A function for the child to run before exec that has the kernel kill it when the actor's
    process dies, so no engine is left orphaned (Linux only; elsewhere nothing). libc is bound
    here, in the parent: loading a library between fork and exec could deadlock."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    PR_SET_PDEATHSIG = 1
    return lambda: prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))


class EngineGone(Exception):
    """The `paligemma` process died or stopped answering."""


class PaliGemmaActor:
    """Owns one `paligemma serve` and sends it the rows of each batch it is given."""

    def __init__(self, binary, model, threads, serve_args, in_flight, options, startup_timeout, request_timeout):
        self.options, self.request_timeout, self.in_flight = options, request_timeout, in_flight
        command = [binary, "serve", "--host", "127.0.0.1", "--port", "0", "--threads", str(threads),
                   "--max-waiting", str(max(in_flight, 1) + 1)]
        if model:
            command += ["--model", model]
        command += list(serve_args)
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        preexec_fn=_parent_death_signal())
        ready = threading.Event()
        self.port = None

        def read_stdout():
            # Drained for the process's whole life: a full pipe would block the server.
            for raw in self.process.stdout:
                line = raw.decode("utf-8", "replace")
                if self.port is None and line.startswith(READY_PREFIX):
                    self.port = int(line[len(READY_PREFIX):].split("/")[0].rsplit(":", 1)[1])
                    ready.set()
                elif " 200 " not in line:  # one log line per answered request would flood Ray's logs
                    sys.stderr.write(line)
            ready.set()

        threading.Thread(target=read_stdout, daemon=True).start()
        if not ready.wait(startup_timeout) or self.port is None:
            self._stop()
            raise RuntimeError(f"`{' '.join(command)}` did not report a port within {startup_timeout} s "
                               f"(exit status {self.process.poll()}); its stderr is in this actor's log")
        self.local = threading.local()
        self.pool = ThreadPoolExecutor(max_workers=max(in_flight, 1))

    def _stop(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def _connection(self):
        if getattr(self.local, "connection", None) is None:
            self.local.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.request_timeout)
        return self.local.connection

    def _post(self, body):
        """Status and decoded JSON of one /v1/generate; EngineGone when the process is not there."""
        failures = 0
        while True:
            connection = self._connection()
            try:
                connection.request("POST", "/v1/generate", body=body, headers={"Content-Type": "application/json"})
                response = connection.getresponse()
                payload = response.read()
            except (OSError, http.client.HTTPException) as error:
                connection.close()
                self.local.connection = None
                try:
                    status = self.process.wait(timeout=1)
                except subprocess.TimeoutExpired:
                    status = None
                failures += 1
                # The server closes connections idle for 30 s: one failure of a live server is
                # retried on a fresh connection. A timeout means the engine hangs.
                if status is None and failures == 1 and not isinstance(error, TimeoutError):
                    continue
                state = f"exit status {status}" if status is not None else "still running"
                raise EngineGone(f"paligemma (pid {self.process.pid}) did not answer: {error!r}; {state}") from error
            if response.status == 503:  # queue full: only when --in-flight exceeds --max-waiting
                time.sleep(float(response.getheader("Retry-After") or 1))
                continue
            try:
                return response.status, json.loads(payload)
            except ValueError:
                return response.status, {"error": {"message": payload[:200].decode("utf-8", "replace")}}

    def _answer(self, row):
        answer_head = {"id": str(row["id"]), "image": str(row["image"])}
        try:
            with open(row["path"], "rb") as f:
                image = base64.b64encode(f.read()).decode("ascii")
        except OSError as error:
            return dump({**answer_head, "error": f"cannot read {row['image']}: {error.strerror or error}"})
        request = {"image": image, "prompt": row["prompt"], **self.options}
        if row["max_new_tokens"] >= 0:
            request["max_new_tokens"] = int(row["max_new_tokens"])
        status, answer = self._post(json.dumps(request).encode("utf-8"))
        if status != 200:
            message = answer.get("error", {}).get("message", "") if isinstance(answer, dict) else ""
            return dump({**answer_head, "error": f"HTTP {status}: {message}"})
        answer.update(answer_head)
        return dump(answer)

    def __call__(self, batch):
        rows = [dict(zip(batch.keys(), values)) for values in zip(*(batch[k] for k in batch.keys()))]
        try:
            lines = list(self.pool.map(self._answer, rows))
        except EngineGone as error:
            # Exiting the actor's process is what makes Ray restart the actor and retry the batches
            # it held; a raised exception would fail the whole dataset instead.
            print(f"paligemma_ray: {error}; exiting this actor so that Ray restarts it", file=sys.stderr, flush=True)
            self._stop()
            os._exit(1)
        return {"id": [r["id"] for r in rows], "line": lines}

    def __del__(self):
        if getattr(self, "process", None) is not None:
            self._stop()


# --------------------------------------------------------------------------------------------
# The driver


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="paligemma_ray.py", description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[1:]), formatter_class=argparse.RawDescriptionHelpFormatter)
    io = parser.add_argument_group("input and output")
    io.add_argument("--input", required=True, type=Path, help="manifest: .jsonl (one request per line) or .parquet (file or directory) with id, image, prompt, max_new_tokens")
    io.add_argument("--output", required=True, type=Path, help="answers: a .jsonl file, or a .parquet directory of part files; a rerun skips the ids already answered there")
    io.add_argument("--format", choices=("jsonl", "parquet"), help="output format (default: from --output's extension, else jsonl)")
    io.add_argument("--base-dir", type=Path, default=Path.cwd(), help="where relative image paths start (default: the current directory)")
    io.add_argument("--rows-per-part", type=int, default=1000, help="Parquet output: answers per part file (default 1000)")
    engine = parser.add_argument_group("the engine")
    engine.add_argument("--paligemma", default="paligemma", help="path of the paligemma binary on every node (default: paligemma on PATH)")
    engine.add_argument("--model", help="checkpoint directory or hub id, as paligemma's --model (default: paligemma's own default)")
    engine.add_argument("--threads", type=int, help="engine threads per actor (default: --cpus-per-actor)")
    engine.add_argument("--serve-arg", action="append", default=[], metavar="ARG",
                        help="one more argument for `paligemma serve`, repeatable (e.g. --serve-arg=--products --serve-arg=bf16)")
    engine.add_argument("--max-tokens", type=int, help="max_new_tokens for rows without one, at most 1024 (default: 64, as the CLI)")
    engine.add_argument("--temperature", type=float, default=0.0, help="0 is greedy (default 0)")
    engine.add_argument("--top-k", type=int, default=0, help="sample among the K most likely tokens (default 0: all)")
    engine.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default 1.0)")
    engine.add_argument("--seed", type=int, default=0, help="sampling seed, the same for every request as in the CLI's batch mode (default 0)")
    cluster = parser.add_argument_group("the cluster")
    cluster.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, else a running local one, else a new local instance)")
    cluster.add_argument("--num-cpus", type=int, help="CPUs of the local Ray instance started here, when there is no cluster")
    cluster.add_argument("--actors", type=int, help="actors, each with one paligemma process (default: as many as the nodes' CPUs hold, so one per node when nodes are alike and --cpus-per-actor is not given)")
    cluster.add_argument("--cpus-per-actor", type=float, help="Ray CPUs each actor reserves (default: the CPUs of the smallest node with CPUs); less gives several engines per node, which helps where decoding is limited by memory bandwidth")
    cluster.add_argument("--batch-size", type=int, default=16, help="rows per Ray task; a retried task redoes at most this many (default 16)")
    cluster.add_argument("--in-flight", type=int, default=2, help="requests each actor keeps queued at its server (default 2)")
    cluster.add_argument("--max-restarts", type=int, default=4, help="times an actor is restarted after its process dies before the job fails (default 4)")
    cluster.add_argument("--startup-timeout", type=float, default=600, help="seconds a server may take to load the model (default 600)")
    cluster.add_argument("--request-timeout", type=float, default=600, help="seconds one request may take before its engine is deemed hung and restarted (default 600)")
    args = parser.parse_args(argv)
    if args.format is None:
        args.format = "parquet" if args.output.suffix == ".parquet" else "jsonl"
    for name in ("batch_size", "in_flight", "rows_per_part"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.actors is not None and args.actors < 1:
        parser.error("--actors must be at least 1")
    # Actors run in other directories (and on other nodes): give them absolute paths.
    args.base_dir = args.base_dir.resolve()
    if os.sep in args.paligemma:
        args.paligemma = str(Path(args.paligemma).resolve())
    if args.model and Path(args.model).exists():
        args.model = str(Path(args.model).resolve())
    return args


def main(argv=None):
    args = parse_args(argv)
    import pyarrow as pa
    import ray

    requests, errors, notes = read_manifest(args.input, args.base_dir)
    for note in notes:
        print(note, file=sys.stderr)
    output = ParquetOutput(args.output, args.rows_per_part) if args.format == "parquet" else JsonlOutput(args.output)
    done = set(output.answered)
    if done:
        print(f"resuming: {len(done)} ids already answered in {args.output}", file=sys.stderr)
    output.write([dump(e) for e in errors if e["id"] not in done])
    done.update(e["id"] for e in errors)
    pending = [r for r in requests if r["id"] not in done]
    if not pending:
        output.close()
        print(f"nothing to do: all {len(requests)} requests are answered in {args.output}", file=sys.stderr)
        return 0

    ray.init(address=args.address, num_cpus=args.num_cpus, log_to_driver=True,
             runtime_env={"env_vars": {"PYTHONUNBUFFERED": "1"}})
    # A head started with --num-cpus=0 (as in the KubeRay recipe) runs no actor and is not counted.
    node_cpus = [n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")]
    nodes = [c for c in node_cpus if c > 0]
    if not nodes:
        sys.exit("error: the Ray cluster has no node with CPUs")
    cpus = args.cpus_per_actor or min(nodes)
    actors = args.actors or sum(int(c // cpus) for c in nodes) or 1
    threads = args.threads or max(1, int(cpus))
    options = {"temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p, "seed": args.seed}
    if args.max_tokens is not None:
        options["max_new_tokens"] = args.max_tokens
    print(f"{len(pending)} requests, {actors} actor(s) × {cpus:g} CPUs, {threads} engine threads each, "
          f"{len(nodes)} node(s) with CPUs", file=sys.stderr)

    # One block per batch, so every actor gets work from the start and a retry redoes one batch.
    columns = {k: [r[k] for r in pending] for k in ("id", "image", "path", "prompt", "max_new_tokens")}
    table = pa.table(columns)
    blocks = [table.slice(i, args.batch_size) for i in range(0, len(pending), args.batch_size)]
    map_args = dict(
        batch_size=args.batch_size, batch_format="numpy",
        fn_constructor_args=(args.paligemma, args.model, threads, args.serve_arg, args.in_flight, options,
                             args.startup_timeout, args.request_timeout),
        compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=cpus)
    dataset = ray.data.from_arrow(blocks)
    try:
        # Ray Data restarts actors without end by default; a request that kills its engine every
        # time would then never stop. Ray 2.60 takes the bound only as a deprecated remote argument.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
            dataset = dataset.map_batches(PaliGemmaActor, **map_args, max_restarts=args.max_restarts, max_task_retries=-1)
    except TypeError:
        print("note: this Ray takes no max_restarts for map_batches; actors are restarted without bound",
              file=sys.stderr)
        dataset = dataset.map_batches(PaliGemmaActor, **map_args)

    wanted = {r["id"] for r in pending}
    written, repeated, started = 0, 0, time.monotonic()
    failure = None
    try:
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            fresh = []
            for ident, line in zip(batch["id"], batch["line"]):
                ident = str(ident)
                if ident in done:
                    repeated += 1  # a retried batch answers again; the first answer stands
                    continue
                done.add(ident)
                fresh.append(str(line))
            output.write(fresh)
            written += len(fresh)
    except Exception as error:  # the job gave up (restarts spent); what was written stays
        failure = error
    finally:
        output.close()
    seconds = time.monotonic() - started
    missing = sorted(wanted - done)
    print(f"{written} answers in {seconds:.1f} s ({written / max(seconds, 1e-9):.2f} per second) to {args.output}"
          + (f"; {repeated} repeated answers from retried batches dropped" if repeated else ""), file=sys.stderr)
    if failure is not None or missing:
        if failure is not None:
            print(f"error: the Ray job failed: {failure}", file=sys.stderr)
        print(f"error: {len(missing)} requests have no answer (e.g. {', '.join(missing[:5])}); "
              "rerun the same command to answer only those", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
