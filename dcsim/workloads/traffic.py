"""Scenario schema of what a service's requests share and how they queue: shared
system prompts, multi-turn sessions and priority classes."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from dcsim.schema_base import Spec


class SharedPrefix(Spec):
    """System prompts at the start of every request of a service: one, or `groups` of
    them with a popularity law (each request takes one independently)."""

    tokens: int = Field(ge=1, le=1_000_000, description="Tokens of each shared prefix; a "
                        "request's prompt is these plus its own prompt_tokens.")
    groups: int = Field(default=1, ge=1, le=1_000_000, description="Distinct prefixes.")
    zipf_s: float = Field(default=0.0, ge=0, le=10, description="Popularity: the k-th "
                          "prefix is taken with probability proportional to 1 / k^zipf_s "
                          "(0: all equally likely).")


class Sessions(Spec):
    """Multi-turn conversations. The service's arrival process starts sessions; a session
    has a number of turns, and each turn after the first arrives a think time after the
    previous answer finished (a closed loop: a slow answer delays the next question).
    A turn's prompt is the whole history (shared prefix, earlier prompts and answers)
    plus its own new tokens, drawn from the service's prompt_tokens; its answer from
    output_tokens."""

    mean_turns: float = Field(ge=1, le=1000, description="Mean turns per session "
                              "(at least 1).")
    turns: Literal["geometric", "constant"] = Field(
        default="geometric", description="Turn count law: geometric (a session ends after "
        "each turn with probability 1 / mean_turns) or constant (every session has "
        "mean_turns turns, a whole number).")
    max_turns: int = Field(default=100, ge=1, le=10_000, description="Turn counts are "
                           "clipped to this.")
    mean_think_time_s: float = Field(gt=0, le=86_400, description="Mean time between an "
                                     "answer and the next prompt, s.")
    think_time: Literal["exponential", "constant"] = Field(
        default="exponential", description="Think-time law: exponential or constant.")

    @model_validator(mode="after")
    def _whole_turns(self) -> Sessions:
        if self.turns == "constant" and self.mean_turns != int(self.mean_turns):
            raise ValueError(f"mean_turns ({self.mean_turns}) must be a whole number with "
                             "turns: constant")
        if self.mean_turns > self.max_turns:
            raise ValueError(f"mean_turns ({self.mean_turns}) must be at most max_turns "
                             f"({self.max_turns})")
        return self


class PriorityClass(Spec):
    """A class of a service's requests: its share, its priority in admission and
    preemption, and how long it may wait for its first admission."""

    name: str = Field(min_length=1, max_length=64)
    share: float = Field(gt=0, le=1, description="Share of the service's requests in this "
                         "class (drawn per request; the shares add up to 1).")
    priority: int = Field(default=0, ge=-1000, le=1000, description="Higher is admitted "
                          "first; lower is preempted first.")
    max_queue_s: float | None = Field(default=None, gt=0, le=86_400, description="A request "
                                      "not admitted this long after its arrival is dropped "
                                      "(timed_out); default: the service's max_queue_s.")
