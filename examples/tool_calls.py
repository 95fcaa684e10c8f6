"""Tools and structured output: parameters such as ``tools`` and ``response_format`` go to
the provider unchanged; tool calls come back typed."""

import asyncio
import json

import llmadapters as la

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"input": {"type": "string"}}, "required": ["input"]},
    },
}
ANSWER_SCHEMA = {
    "type": "json_schema",
    "json_schema": {"name": "answer", "schema": {"type": "object", "properties": {"text": {"type": "string"}}}},
}


async def main() -> None:
    async with la.AsyncClient() as client:
        reply = await client.chat.completions.create(
            model="fake/echo", messages=[{"role": "user", "content": "Paris"}], tools=[WEATHER_TOOL]
        )
        call = (reply.choices[0].message.tool_calls or ())[0]
        assert call.function is not None
        print(reply.choices[0].finish_reason, call.function.name, json.loads(call.function.arguments or "{}"))

        structured = await client.chat.completions.create(
            model="fake/echo", messages=[{"role": "user", "content": "a short answer"}], response_format=ANSWER_SCHEMA
        )
        print(structured.choices[0].message.content)


asyncio.run(main())
