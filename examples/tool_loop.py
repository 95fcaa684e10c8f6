"""A streamed tool loop that runs unchanged on every provider: append the returned
message, run the tools it asks for, call again, until the model answers in words.

It runs against the fake server's provider profiles, each of which refuses what its
provider refuses (DeepSeek's, Moonshot's and MiMo's thinking models, a 400 when
reasoning_content is not sent back; DashScope's thinking models, non-streamed calls;
Zhipu, an assistant message with neither content nor tool calls)."""

import asyncio
import json
from typing import Any

import llmadapters as la

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"input": {"type": "string"}}, "required": ["input"]},
        },
    }
]


def get_weather(input: str) -> str:
    return f"sunny in {input}"


async def converse(client: la.AsyncClient, model: str, questions: list[str]) -> list[str]:
    messages: list[Any] = []
    answers = []
    for question in questions:
        messages.append({"role": "user", "content": question})
        while True:
            stream = await client.chat.completions.create(model=model, messages=messages, tools=TOOLS, stream=True)
            message = (await stream.get_final_completion()).choices[0].message
            messages.append(message)  # reasoning_content and tool calls go back as they came
            if not message.tool_calls:
                break
            for call in message.tool_calls:
                assert call.function is not None
                result = get_weather(**json.loads(call.function.arguments or "{}"))
                messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
        answers.append(message.content or "")
    return answers


# The plain fake model, then each provider profile on top of it.
PROFILES = ("deepseek-thinking", "qwen-thinking", "zhipu-thinking", "moonshot-thinking", "mimo-thinking")
MODELS = ("fake/echo", *(f"fake/echo+{profile}" for profile in PROFILES))


async def main() -> None:
    async with la.AsyncClient() as client:
        for model in MODELS:
            answers = await converse(client, model, ["Paris", "Rome", "Oslo"])
            print(model, answers)


asyncio.run(main())
