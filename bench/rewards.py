"""A reward function that costs next to nothing, so online-RL timings measure the trainer, not the reward."""


def word_reward(completions, **kwargs):
    """+1 per occurrence of "good" in the completion (strings or single assistant messages)."""
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [float(t.count("good")) for t in texts]
