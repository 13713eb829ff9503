"""Speed of `convnet serve` on loopback: latency and throughput for single images and for batches,
through its own /v1 protocol and the Open Inference Protocol over REST (/v2) and gRPC side by side.

    .venv/bin/python -m bench.serve RUN [--engine keras|onnx ...] [--requests 2000] [--json FILE]

For each engine this starts the real `convnet serve` binary on a free loopback port, then drives it
with a minimal asyncio HTTP/1.1 client (keep-alive connections, pre-built requests, so the client
costs little of the machine the server shares). Each protocol gets the same images: single images at
1 and 16 concurrent clients (p50/p99 latency, requests/s), then batches (images/s). /v1 sends PNG
uploads and one `.npy` file per batch; /v2 sends the JSON tensor (784 numbers per image) and
Triton's binary tensor extension (what tritonclient sends by default); gRPC sends a
ModelInferRequest with `raw_input_contents` (what tritonclient.grpc sends), on one channel per
client (grpc.aio, with the stubs convnet serves from). Warm-up requests are not timed; every phase
is bounded by a request count and a time limit; any non-200 answer (non-OK status) is an error.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

from convnet.machine import machine

CONVNET = str(Path(sys.executable).with_name("convnet"))
BOUNDARY = "convnetbench"


def post(port: int, path: str, content_type: str, body: bytes, extra: str = "") -> bytes:
    """One complete HTTP POST request."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\n"
        f"{extra}Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def v2_json_request(port: int, model: str, pixels: np.ndarray) -> bytes:
    """POST /v2/models/MODEL/infer with the tensor as JSON numbers."""
    tensor = {
        "name": "input",
        "shape": list(pixels.shape),
        "datatype": "UINT8",
        "data": pixels.ravel().tolist(),
    }
    body = json.dumps({"inputs": [tensor]}).encode()
    return post(port, f"/v2/models/{model}/infer", "application/json", body)


def v2_binary_request(port: int, model: str, pixels: np.ndarray) -> bytes:
    """POST /v2/models/MODEL/infer with the tensor in Triton's binary extension."""
    data = np.ascontiguousarray(pixels, np.uint8).tobytes()
    tensor = {
        "name": "input",
        "shape": list(pixels.shape),
        "datatype": "UINT8",
        "parameters": {"binary_data_size": len(data)},
    }
    header = json.dumps({"inputs": [tensor]}).encode()
    extra = f"Inference-Header-Content-Length: {len(header)}\r\n"
    path = f"/v2/models/{model}/infer"
    return post(port, path, "application/octet-stream", header + data, extra)


def grpc_request(model: str, pixels: np.ndarray):
    """ModelInferRequest with the tensor in raw_input_contents."""
    from convnet.serving.grpc import grpc_predict_v2_pb2 as pb

    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="input", datatype="UINT8", shape=list(pixels.shape))
    request.raw_input_contents.append(np.ascontiguousarray(pixels).tobytes())
    return request


def multipart_request(port: int, filename: str, data: bytes, query: str = "") -> bytes:
    """One complete HTTP POST /v1/predict request with a single file part."""
    body = (
        (
            f"--{BOUNDARY}\r\n"
            f'Content-Disposition: form-data; name="files"; filename="{filename}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    content_type = f"multipart/form-data; boundary={BOUNDARY}"
    return post(port, f"/v1/predict{query}", content_type, body)


async def _client(port: int, requests: list[bytes], count: int, deadline: float, out: dict):
    """Sends requests one after another on one keep-alive connection, timing each."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for i in range(count):
            if time.perf_counter() > deadline:
                break
            started = time.perf_counter()
            writer.write(requests[i % len(requests)])
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            out["latencies"].append(time.perf_counter() - started)
            if not head.startswith(b"HTTP/1.1 200"):
                out["errors"] += 1
    except (OSError, asyncio.IncompleteReadError):
        out["errors"] += 1
    finally:
        writer.close()


async def load(
    port: int, requests: list, clients: int, total: int, seconds: float, client=_client
) -> dict:
    """`total` requests spread over `clients` concurrent connections, stopped after `seconds`."""
    out = {"latencies": [], "errors": 0}
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    per_client = -(-total // clients)
    await asyncio.gather(
        *(client(port, requests, per_client, deadline, out) for _ in range(clients))
    )
    wall = time.perf_counter() - started
    latencies = np.array(out["latencies"]) * 1000
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": out["errors"],
        "p50_ms": float(np.percentile(latencies, 50)),
        "p99_ms": float(np.percentile(latencies, 99)),
        "requests_per_s": len(latencies) / wall,
    }


async def _grpc_client(port: int, requests: list, count: int, deadline: float, out: dict):
    """`_client` over gRPC: unary ModelInfer calls one after another on one channel."""
    import grpc

    from convnet.serving.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        infer = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer
        for i in range(count):
            if time.perf_counter() > deadline:
                break
            started = time.perf_counter()
            try:
                await infer(requests[i % len(requests)])
            except grpc.aio.AioRpcError:
                out["errors"] += 1
            out["latencies"].append(time.perf_counter() - started)


async def grpc_load(port, requests: list, clients: int, total: int, seconds: float) -> dict:
    """`load` over gRPC."""
    return await load(port, requests, clients, total, seconds, client=_grpc_client)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux), 0 elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(server: subprocess.Popen, phase) -> dict:
    """Runs one load phase; adds the server's CPU milliseconds per request, which other programs
    on a shared machine disturb far less than latency."""
    before = cpu_seconds(server.pid)
    row = asyncio.run(phase)
    row["server_cpu_ms"] = (cpu_seconds(server.pid) - before) * 1000 / max(row["requests"], 1)
    return row


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: str, engine: str, port: int, grpc_port: int) -> subprocess.Popen:
    """The real `convnet serve`, once /healthz answers."""
    server = subprocess.Popen(
        [CONVNET, "serve", run, "--port", str(port), "--engine", engine]
        + ["--grpc-port", str(grpc_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(240):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return server
        except OSError:
            if server.poll() is not None:
                raise SystemExit(f"convnet serve exited with {server.returncode}") from None
            time.sleep(0.5)
    server.terminate()
    raise SystemExit("convnet serve did not answer /healthz within 120 s")


def test_images(count: int) -> np.ndarray:
    """Fashion-MNIST test images, or noise when the data is not on this machine."""
    try:
        from convnet.data.sources import load_fashion_mnist

        return load_fashion_mnist()["test"].x[:count]
    except Exception:  # the benchmark still measures speed without the real data
        return np.random.default_rng(0).integers(0, 256, (count, 28, 28, 1), dtype=np.uint8)


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels[..., 0]).save(buffer, "PNG")
    return buffer.getvalue()


def npy_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, pixels)
    return buffer.getvalue()


def bench_engine(run: str, engine: str, args) -> list[dict]:
    """All phases against one engine's server, /v1 and /v2 alternating phase by phase."""
    port, grpc_port = free_port(), free_port()
    server = start_server(run, engine, port, grpc_port)
    model = Path(run).name
    try:
        images = test_images(max(args.batch, 256))
        batch = images[: args.batch]
        singles = {
            "v1": [multipart_request(port, f"{i}.png", png_bytes(x)) for i, x in enumerate(images)],
            "v2": [v2_json_request(port, model, x[np.newaxis]) for x in images],
            "v2 binary": [v2_binary_request(port, model, x[np.newaxis]) for x in images],
            "grpc": [grpc_request(model, x[np.newaxis]) for x in images],
        }
        batches = {
            "v1": [multipart_request(port, "batch.npy", npy_bytes(batch), "?top_k=1")],
            "v2": [v2_json_request(port, model, batch)],
            "v2 binary": [v2_binary_request(port, model, batch)],
            "grpc": [grpc_request(model, batch)],
        }

        def phase(protocol: str, requests: list, clients: int, total: int, seconds: float):
            if protocol == "grpc":
                return grpc_load(grpc_port, requests, clients, total, seconds)
            return load(port, requests, clients, total, seconds)

        for protocol, requests in singles.items():  # warm-up: traces, caches, allocators
            asyncio.run(phase(protocol, requests, 4, 200, 30))
        rows = []
        for clients, total in ((1, args.requests // 4), (16, args.requests)):
            for protocol, requests in singles.items():
                row = timed(server, phase(protocol, requests, clients, total, args.seconds))
                rows.append({"engine": engine, "protocol": protocol, "kind": "single image"} | row)
        for protocol, requests in batches.items():
            asyncio.run(phase(protocol, requests, 2, 4, 30))
            row = timed(server, phase(protocol, requests, 2, args.batch_requests, args.seconds))
            row["images_per_s"] = row["requests_per_s"] * args.batch
            kind = f"batch of {args.batch}"
            rows.append({"engine": engine, "protocol": protocol, "kind": kind} | row)
        return rows
    finally:
        server.terminate()
        server.wait(timeout=30)


def markdown(rows: list[dict]) -> str:
    lines = [
        "| engine | protocol | requests | clients | n | errors | p50 ms | p99 ms | req/s "
        "| images/s | server CPU ms/req |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        images = f"{r['images_per_s']:,.0f}" if "images_per_s" in r else ""
        lines.append(
            f"| {r['engine']} | {r['protocol']} | {r['kind']} | {r['clients']} | {r['requests']} "
            f"| {r['errors']} "
            f"| {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['requests_per_s']:,.0f} | {images} "
            f"| {r['server_cpu_ms']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", help="a run folder (the `seed` preset for the issue's targets)")
    parser.add_argument("--engine", nargs="+", default=["keras", "onnx"], choices=["keras", "onnx"])
    parser.add_argument("--requests", type=int, default=2000, help="at 16 clients (1: a quarter)")
    parser.add_argument("--batch", type=int, default=1024, help="images per batch request")
    parser.add_argument("--batch-requests", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=60, help="time limit of each phase")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    rows = [row for engine in args.engine for row in bench_engine(args.run, engine, args)]
    info = machine()
    load_average = [round(x, 2) for x in os.getloadavg()]
    print(f"{info['cpu']}, {info['cpus']} cores, {platform.platform()}, load {load_average}")
    print(markdown(rows))
    if args.json:
        command = "python -m bench.serve " + " ".join(argv if argv is not None else sys.argv[1:])
        result = {"machine": info, "command": command, "load_average": load_average, "rows": rows}
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
