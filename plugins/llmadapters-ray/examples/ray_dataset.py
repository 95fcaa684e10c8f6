"""Answer every row of a Ray Data dataset, on a local Ray (or a cluster's, with
ray.init(address=...)): the built-in fake provider answers, no key needed."""

import ray
from llmadapters_ray import ChatCompletionsUDF

ray.init(num_cpus=2, log_to_driver=False)
ray.data.DataContext.get_current().enable_progress_bars = False

questions = ray.data.from_items([{"id": i, "question": f"what is {i} + {i}?"} for i in range(200)])
answered = questions.map_batches(
    ChatCompletionsUDF,
    fn_constructor_kwargs={
        "model": "fake/echo",  # any provider/model of your llmadapters.toml
        "prompt_column": "question",
        "params": {"max_tokens": 64},
        "actors": 2,  # the pool's size: each actor keeps to half of the local limits
    },
    compute=ray.data.ActorPoolStrategy(size=2),
    batch_size=64,
)
rows = sorted(answered.take_all(), key=lambda row: row["id"])
failed = [row for row in rows if row["error"] is not None]
tokens = sum(row["completion_tokens"] for row in rows if row["error"] is None)
print(f"{len(rows)} rows, {len(failed)} failed, {tokens} completion tokens")
print(rows[7]["generated_text"])
