"""What a long call says in its first progress message: how long it should take, and why."""


from __future__ import annotations


def expected_duration(tool: str, runs: int, tokens: int, seconds: float, measured: bool,
                      counted: bool = True) -> str:
    """A call's expected duration, from the tokens its passes forward and the model's rate
    (``counted``: the text's tokens are counted, not guessed from its length).

    >>> expected_duration("ablate_neurons", 42, 54432, 108.9, measured=True)
    'ablate_neurons: 42 runs, 54,432 tokens forwarded: expect about 2 min (at the 500 tokens/s this model last ran here)'
    """
    rate = tokens / seconds if seconds > 0 else 0.0
    about = f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"
    basis = (f"at the {rate:,.0f} tokens/s this model last ran here" if measured
             else f"at {rate:,.0f} tokens/s, assumed until this server has timed the model; loading it, the "
             "first time, comes on top")
    forwarded = f"{tokens:,} tokens" if counted else f"~{tokens:,} tokens (from the text's length; counted once read)"
    return f"{tool}: {runs} runs, {forwarded} forwarded: expect about {about} ({basis})"
