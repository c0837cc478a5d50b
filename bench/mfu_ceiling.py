"""What MFU the matrix products of a DPO step can reach on this CPU, with nothing else in the step.

    .venv/bin/python bench/mfu_ceiling.py [--size 3.5M] [--threads 1]

Times, on one thread like bench/run_bench.py, only the matmuls of one DPO training step of the bench model
at the bench batch (4 pairs = 8 sequences padded to the longest of the batch): for every linear layer the
forward product and the two backward products (input and weight gradients), and the attention core
(scaled_dot_product_attention forward + backward, causal). Model FLOPs are counted exactly as run_bench.py
counts them (6 N + 12 L h T per unpadded token), so the result is the MFU a step would have if norms,
activations, rotary embeddings, the log-softmax, the loss, the optimizer and Python dispatch took no time:
an upper bound of the MFU run_bench.py reports for DPO. Writes one JSON line to bench/out/mfu_ceiling.jsonl.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import jobs  # noqa: E402
from jobs import OUT  # noqa: E402


def seconds(fn, budget: float = 0.2) -> float:
    """Median seconds of one call of fn over calls filling about `budget` seconds (after one warm-up call)."""
    fn()
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < budget or len(times) < 5:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def padded_rows(tok, batch: int = 4, draws: int = 500) -> tuple[float, float]:
    """(mean padded rows of the policy forward per step, mean unpadded policy tokens per step) over random
    batches of the bench's preference data: chosen and rejected sequences padded to the longest of the batch."""
    rows = [json.loads(x) for x in open(OUT / "data" / "preference.jsonl")]
    n = lambda s: len(tok(s)["input_ids"])  # noqa: E731
    lengths = [(n(r["prompt"]) + n(r["chosen"]), n(r["prompt"]) + n(r["rejected"])) for r in rows]
    rng = random.Random(0)
    padded, real = [], []
    for _ in range(draws):
        pick = rng.sample(lengths, batch)
        padded.append(2 * batch * max(max(pair) for pair in pick))
        real.append(sum(sum(pair) for pair in pick))
    return statistics.mean(padded), statistics.mean(real)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="3.5M", choices=sorted(jobs.SIZES))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    import torch
    from transformers import AutoConfig, AutoTokenizer

    from run_bench import matmul_peak

    torch.set_num_threads(a.threads)
    jobs.build()
    c = AutoConfig.from_pretrained(str(OUT / "models" / a.size))
    tok = AutoTokenizer.from_pretrained(str(OUT / "models" / a.size))
    rows, tokens = padded_rows(tok)
    m, seq = int(round(rows)), int(round(rows / 8))
    h, layers, heads = c.hidden_size, c.num_hidden_layers, c.num_attention_heads
    d = h // heads
    kv = c.num_key_value_heads * d
    linears = [(h, h), (h, kv), (h, kv), (h, h), (h, c.intermediate_size), (h, c.intermediate_size),
               (c.intermediate_size, h)] * layers + [(h, c.vocab_size)]
    n_matmul, _, _, _ = jobs.n_params(a.size)
    flops = tokens * (6 * n_matmul + 12 * layers * h * (tokens / 8))  # run_bench.py's count, T = mean sequence
    q, k, v = (torch.randn(8, heads, seq, d, requires_grad=True) for _ in range(3))

    def attention():
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        out.backward(torch.ones_like(out))

    def products() -> tuple[float, float]:
        gemm = 0.0
        for (n_in, n_out), count in collections.Counter(linears).items():
            x, w, g = torch.randn(m, n_in), torch.randn(n_out, n_in), torch.randn(m, n_out)
            gemm += count * seconds(lambda: torch.nn.functional.linear(x, w))  # forward
            gemm += count * seconds(lambda: torch.mm(g, w))  # input gradient
            gemm += count * seconds(lambda: torch.mm(g.t(), x))  # weight gradient
        return gemm, layers * seconds(attention)

    # Peak and products alternate, so that each ratio pairs measurements taken seconds apart (the CPU's rate drifts).
    runs = []
    for _ in range(a.repeats):
        peak = matmul_peak(a.threads)
        gemm, attn = products()
        runs.append(dict(peak=peak, gemm=gemm, attn=attn, ceiling=flops / (gemm + attn) / 1e9 / peak))
    ceilings = sorted(r["ceiling"] for r in runs)
    med = lambda key: statistics.median(r[key] for r in runs)  # noqa: E731
    row = dict(size=a.size, threads=a.threads, padded_rows=m, policy_tokens=round(tokens), repeats=a.repeats,
               peak_gflops=round(med("peak"), 1), best_peak_gflops=round(max(r["peak"] for r in runs), 1),
               gemm_s=round(med("gemm"), 4), attention_s=round(med("attn"), 4), model_gflop=round(flops / 1e9, 3),
               gemm_gflops=round(6 * n_matmul * m / med("gemm") / 1e9, 1),
               mfu_ceiling=round(statistics.median(ceilings), 3), mfu_ceiling_range=[round(ceilings[0], 3),
                                                                                      round(ceilings[-1], 3)],
               mfu_ceiling_vs_best_peak=round(flops / (med("gemm") + med("attn")) / 1e9 / max(r["peak"] for r in runs), 3),
               date=time.strftime("%Y-%m-%d %H:%M"))
    print(json.dumps(row))
    with open(OUT / "mfu_ceiling.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
