"""A real serving loop on the measured device: continuous batching over the profiled model.

It schedules exactly as the simulator's replica does without chunked prefill (see
dcsim.engine.replica and dcsim.engine.batching), under either iteration policy:
waiting requests are admitted first come first served while a batch slot and the
token budget allow; a prompt longer than the budget runs alone. `mixed`: each
iteration, every decoding sequence also gets one token, and the budget is
`max_batched_tokens` less one token per decoding sequence. `prefill_first`: an
iteration that admits prompts prefills only them, with the whole budget, and the
decoding sequences get their next token in the following iteration that admits
nothing. The admitted prompts are prefilled as one right-padded batch that emits
their first tokens. Token ids are random (timing does
not depend on them); each request generates exactly its trace's output length.

Requests arrive in wall-clock time at their trace times. All tokens of an iteration
are stamped when it ends (one device synchronisation per iteration), as in the
simulator. Energy is the device's counter over the whole replay, idle gaps included.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from dcsim.measure.timing import Target
from dcsim.measure.torch_model import Decoder, KVCache


@dataclass
class _Live:
    rid: int
    slot: int
    prompt: int
    output: int
    generated: int = 0


@dataclass(frozen=True)
class ServeResult:
    """What the real serving loop measured: per request first token and finish times, and
    the energy counter over the run."""

    requests: pd.DataFrame  # arrival_s, first_token_s, finish_s, prompt/output tokens
    wall_s: float
    energy_j: float
    iterations: int


class Server:
    """Slots of a KV cache, the waiting queue and the decoding set of one replica."""

    def __init__(self, model: Decoder, target: Target, slots: int, max_len: int,
                 max_batched_tokens: int, seed: int, prefill_first: bool = False) -> None:
        self.model, self.target, self.budget = model, target, max_batched_tokens
        self.prefill_first = prefill_first
        self.cache = KVCache(model.m, model.n_layers, slots, max_len, target.device, target.dtype)
        self.free = deque(range(slots))
        self.last = torch.zeros(slots, dtype=torch.long, device=target.device)  # last token
        self.gen = torch.Generator(device=target.device).manual_seed(seed)
        self.waiting: deque[_Live] = deque()
        self.decoding: list[_Live] = []

    def admit(self) -> list[_Live]:
        """The simulator's admission rule without chunking (module docstring)."""
        shared = self.decoding and not self.prefill_first  # decode tokens in the budget
        budget, chosen = self.budget - (len(self.decoding) if shared else 0), []
        while self.waiting and self.free and budget > 0:
            need = self.waiting[0].prompt
            if need > budget and (chosen or shared):
                break
            s = self.waiting.popleft()
            s.slot = self.free.popleft()
            chosen.append(s)
            budget -= need
        return chosen

    def prefill(self, seqs: list[_Live]) -> None:
        """Prefill the prompts of `seqs` as one padded batch into their KV slots."""
        dev = self.target.device
        lengths = torch.tensor([s.prompt for s in seqs], device=dev)
        slots = torch.tensor([s.slot for s in seqs], device=dev)
        x = torch.randint(0, self.model.m.vocab, (len(seqs), int(lengths.max())), device=dev,
                          generator=self.gen)
        logits = self.model.prefill(x, lengths, self.cache, slots)
        self.last[slots] = logits.argmax(-1)

    def decode(self, seqs: list[_Live]) -> None:
        """One decode step for every sequence in `seqs` from the slot KV cache."""
        dev = self.target.device
        slots = torch.tensor([s.slot for s in seqs], device=dev)
        ctx = [s.prompt + s.generated - 1 for s in seqs]  # cached tokens; the next goes there
        pos = torch.tensor(ctx, device=dev)
        logits = self.model.decode(self.last[slots][:, None], pos, self.cache, slots, max(ctx) + 1)
        self.last[slots] = logits.argmax(-1)


def serve(model: Decoder, target: Target, reqs: pd.DataFrame, max_num_seqs: int,
          max_batched_tokens: int, seed: int = 0,
          progress: Callable[[int, int], None] | None = None,
          scheduler: str = "mixed") -> ServeResult:
    """Replay `reqs` (arrival_s, prompt_tokens, output_tokens) in real time on the device
    under iteration policy `scheduler` (mixed or prefill_first)."""
    n = len(reqs)
    arrival = reqs["arrival_s"].to_numpy(float)
    prompt, output = reqs["prompt_tokens"].to_numpy(), reqs["output_tokens"].to_numpy()
    max_len = int((prompt + output).max()) + 1
    srv = Server(model, target, max_num_seqs, max_len, max_batched_tokens, seed,
                 scheduler == "prefill_first")
    first, finish = np.full(n, np.nan), np.full(n, np.nan)
    nxt, done, iterations = 0, 0, 0
    target.meter.start()
    t0 = time.perf_counter()
    with torch.inference_mode():
        while done < n:
            now = time.perf_counter() - t0
            while nxt < n and arrival[nxt] <= now:
                srv.waiting.append(_Live(nxt, -1, int(prompt[nxt]), int(output[nxt])))
                nxt += 1
            if not srv.waiting and not srv.decoding:
                time.sleep(max(arrival[nxt] - now, 0.0))
                continue
            new = srv.admit()
            old = [] if new and srv.prefill_first else list(srv.decoding)  # who decodes
            if new:
                srv.prefill(new)
            if old:
                srv.decode(old)
            target.sync()
            end = time.perf_counter() - t0
            iterations += 1
            for s in old:
                s.generated += 1
            for s in new:
                s.generated, first[s.rid] = 1, end
                srv.decoding.append(s)
            finished = [s for s in srv.decoding if s.generated >= s.output]
            for s in finished:
                finish[s.rid] = end
                srv.decoding.remove(s)
                srv.free.append(s.slot)
            done += len(finished)
            if progress and finished:
                progress(done, n)
    wall = time.perf_counter() - t0
    window = target.meter.stop()
    out = pd.DataFrame({"arrival_s": arrival, "prompt_tokens": prompt, "output_tokens": output,
                        "first_token_s": first, "finish_s": finish})
    return ServeResult(out, wall, window.energy_j, iterations)
