"""Drives a running wasmgate with the official OpenAI Python SDK, as a user would.

Usage: sdk_check.py BASE_URL (e.g. http://127.0.0.1:8080/v1). The gateway under test serves the
mock provider, an OpenAI-compatible upstream `up` that answers tool calls, an upstream `down`
that always fails with 503, and the auth plugin accepting the key `sk-e2e`. Each check raises
with a message saying what differed; the last line printed is `ok: N checks`.
"""

import json
import sys

import openai

BASE = sys.argv[1]
client = openai.OpenAI(base_url=BASE, api_key="sk-e2e", max_retries=0)
checks = 0


def check(condition, what):
    global checks
    if not condition:
        raise AssertionError(what)
    checks += 1


# A plain completion.
r = client.chat.completions.create(
    model="mock/echo", messages=[{"role": "user", "content": "hello sdk"}]
)
check(r.choices[0].message.content == "echo: hello sdk", f"plain completion: {r}")
check(r.usage is not None and r.usage.total_tokens > 0, f"usage: {r.usage}")

# A stream, read with the SDK's own iterator.
stream = client.chat.completions.create(
    model="mock/echo",
    messages=[{"role": "user", "content": "stream me please"}],
    stream=True,
    stream_options={"include_usage": True},
)
text, pieces, usage, finish = "", 0, None, None
for chunk in stream:
    if chunk.choices:
        delta = chunk.choices[0].delta
        if delta.content:
            text += delta.content
            pieces += 1
        finish = chunk.choices[0].finish_reason or finish
    if chunk.usage:
        usage = chunk.usage
check(text == "echo: stream me please", f"streamed text: {text!r}")
check(pieces >= 2, f"the text came in {pieces} piece(s), not streamed")
check(finish == "stop", f"finish reason: {finish}")
check(usage is not None and usage.completion_tokens > 0, f"stream usage: {usage}")

# Tool calls through an OpenAI-compatible upstream.
tools = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
r = client.chat.completions.create(
    model="up/gpt-4o-mini",
    messages=[{"role": "user", "content": "Weather in Paris?"}],
    tools=tools,
    tool_choice="auto",
)
choice = r.choices[0]
check(choice.finish_reason == "tool_calls", f"finish reason: {choice.finish_reason}")
calls = choice.message.tool_calls or []
check(len(calls) == 1 and calls[0].function.name == "get_weather", f"tool calls: {calls}")
check(json.loads(calls[0].function.arguments) == {"city": "Paris"}, f"arguments: {calls[0]}")
# The tool's answer goes back, and the model answers in words.
r = client.chat.completions.create(
    model="up/gpt-4o-mini",
    messages=[
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "tool_calls": [c.model_dump() for c in calls]},
        {"role": "tool", "tool_call_id": calls[0].id, "content": '{"celsius": 21}'},
    ],
    tools=tools,
)
check(r.choices[0].message.content == "from upstream", f"after the tool: {r}")

# A streamed tool call: the SDK's iterator gets the call's name first, then its arguments in
# pieces (passed through the gateway untouched).
stream = client.chat.completions.create(
    model="up/gpt-4o-mini",
    messages=[{"role": "user", "content": "Weather in Paris?"}],
    tools=tools,
    stream=True,
)
name, arguments, finish = None, "", None
for chunk in stream:
    if not chunk.choices:
        continue
    for call in chunk.choices[0].delta.tool_calls or []:
        if call.function and call.function.name:
            name = call.function.name
        if call.function and call.function.arguments:
            arguments += call.function.arguments
    finish = chunk.choices[0].finish_reason or finish
check(name == "get_weather", f"streamed tool name: {name}")
check(json.loads(arguments) == {"city": "Paris"}, f"streamed arguments: {arguments!r}")
check(finish == "tool_calls", f"streamed finish reason: {finish}")

# An error: a wrong key is refused by the auth plugin, and the SDK raises its own class with
# the gateway's message.
bad = openai.OpenAI(base_url=BASE, api_key="sk-wrong", max_retries=0)
try:
    bad.chat.completions.create(
        model="mock/echo", messages=[{"role": "user", "content": "let me in"}]
    )
    check(False, "a wrong key was accepted")
except openai.AuthenticationError as e:
    check(e.status_code == 401, f"status {e.status_code}")
    check("is not accepted" in e.message, f"message: {e.message}")

# A request the gateway refuses itself: an unknown provider.
try:
    client.chat.completions.create(
        model="nowhere/m", messages=[{"role": "user", "content": "hi"}]
    )
    check(False, "an unknown provider was accepted")
except openai.NotFoundError as e:
    check("nowhere" in e.message, f"message: {e.message}")

# A fallback: `down` fails with 503, the request names `up` as its fallback.
r = client.chat.completions.create(
    model="down/gpt-4o-mini",
    messages=[{"role": "user", "content": "fall back please"}],
    extra_body={"fallbacks": ["up/gpt-4o-mini"]},
)
check(r.choices[0].message.content == "from upstream", f"fallback answer: {r}")
check(r.model == "gpt-4o-mini", f"fallback model: {r.model}")

print(f"ok: {checks} checks")
