"""A job through a provider's Batch API, with the command line's own entry point, against
the fake provider (its server implements the files and batches endpoints). Killed at any
point, the same command with --resume goes on from OUT.batch-api.json.

    python examples/batch_api.py
"""

import json
import os

from llmadapters.cli import main

with open("questions.jsonl", "w") as f:
    for i in range(5):
        body = {"model": "fake/echo", "messages": [{"role": "user", "content": f"question {i}"}]}
        f.write(json.dumps({"custom_id": f"q{i}", "body": body}) + "\n")

# The command: llmadapters batch questions.jsonl -o answers.jsonl --via batch-api
status = main(["batch", "questions.jsonl", "-o", "answers.jsonl", "--via", "batch-api", "--poll-interval", "0.1", "-q"])

with open("answers.jsonl") as f:
    answers = [json.loads(line) for line in f]
print("exit status", status, "-", len(answers), "answers, in the online mode's format:")
print(answers[0]["custom_id"], answers[0]["response"]["body"]["choices"][0]["message"]["content"])
print("state file left:", os.path.exists("answers.jsonl.batch-api.json"))
