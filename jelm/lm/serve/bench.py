"""``python -m jelm.lm.serve.bench``: tokens/s of ``jelm serve`` under concurrent OpenAI
clients (ELM §3.1's sampling shared over HTTP).

Starts a :class:`~jelm.lm.serve.Server` in this process on a free localhost port, with
continuous batching and, for comparison, with micro-batching (``--modes``), and lets ``c``
threads, each with its own official ``openai`` client, send the ELM diff prompts of
:func:`jelm.lm.bench.bench_prompts` one request after another (temperature 0.8, top-p
0.95, up to 384 new tokens). Tokens/s is the completion tokens the server reports over
the wall time of all requests of a setting, in a second pass over the same requests (the
first compiles the programs of their shapes). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Sequence
from typing import Any

__all__ = ["bench_serve", "main"]


def _drive(url: str, model: str, prompts: list[str], clients: int, kw: dict) -> dict[str, Any]:
    """Send ``prompts`` from ``clients`` threads (prompt ``i`` from thread ``i % clients``)."""
    import openai

    tokens = [0] * clients
    errors: list[BaseException] = []

    def work(c: int) -> None:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", timeout=600)
        try:
            for i in range(c, len(prompts), clients):
                r = client.completions.create(model=model, prompt=prompts[i], seed=i, **kw)
                tokens[c] += r.usage.completion_tokens
        except BaseException as exc:  # reported, not swallowed
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=work, args=(c,)) for c in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"a request failed: {errors[0]!r}") from errors[0]
    return {
        "clients": clients,
        "requests": len(prompts),
        "tokens": sum(tokens),
        "wall_s": round(wall, 2),
        "tokens_per_s": round(sum(tokens) / wall, 1),
    }


def bench_serve(
    model: str = "shipped",
    clients: Sequence[int] = (1, 8),
    requests: int = 16,
    modes: Sequence[str] = ("continuous", "micro"),
    max_tokens: int = 384,
) -> dict[str, Any]:
    """Tokens/s of ``jelm serve`` per batching mode and number of concurrent clients."""
    from jelm.lm.bench import bench_prompts, load_any
    from jelm.lm.serve import Server

    params, config, tokenizer, path, _ = load_any(model)
    from jelm.lm.backends import JelmBackend

    backend = JelmBackend(params, config, tokenizer, name="jelm", max_batch=32)
    pool = bench_prompts()
    prompts = [pool[i % len(pool)] for i in range(requests)]
    kw = dict(max_tokens=max_tokens, temperature=0.8, top_p=0.95)
    out: dict[str, Any] = {"model": str(path), "sampling": kw, "runs": []}
    for mode in modes:
        with Server(backend, port=0, continuous=mode == "continuous") as server:
            for c in clients:
                _drive(server.url, server.model_id, prompts, c, kw)  # compiles the shapes
                run = _drive(server.url, server.model_id, prompts, c, kw)
                out["runs"].append({"mode": mode, **run})
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m jelm.lm.serve.bench", description=__doc__)
    parser.add_argument("--model", default="shipped", help="shipped | <jelm dir> | hf:<dir>")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--requests", type=int, default=16, help="requests per setting")
    parser.add_argument(
        "--modes", nargs="+", default=["continuous", "micro"], choices=["continuous", "micro"]
    )
    parser.add_argument("--max-tokens", type=int, default=384)
    args = parser.parse_args(argv)
    result = bench_serve(args.model, args.clients, args.requests, args.modes, args.max_tokens)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
