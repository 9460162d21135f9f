"""Drives Clade's OpenAI-compatible API with the official `openai` package, unchanged.

Usage: openai_client.py BASE_URL OPERATOR_TOKEN RIVAL_TOKEN
Prints one JSON object with what each call returned; the Rust test asserts on it.
"""

import json
import sys

import openai

base, operator_token, rival_token = sys.argv[1:4]
client = openai.OpenAI(base_url=base + "/v1", api_key=operator_token, max_retries=0)
rival = openai.OpenAI(base_url=base + "/v1", api_key=rival_token, max_retries=0)
out = {}


def error_of(call):
    try:
        call()
    except openai.APIStatusError as err:
        body = err.body if isinstance(err.body, dict) else {}
        return {
            "status": err.status_code,
            "class": type(err).__name__,
            "code": body.get("code"),
            "type": body.get("type"),
            "param": body.get("param"),
            "message": body.get("message"),
        }
    return None


out["models"] = [m.id for m in client.models.list().data]
out["rival_models"] = [m.id for m in rival.models.list().data]

# Not streamed; the server keeps the conversation named by `user`.
first = client.chat.completions.create(
    model="ada", messages=[{"role": "user", "content": "hello there"}], user="alice"
)
out["first"] = {
    "id": first.id,
    "object": first.object,
    "content": first.choices[0].message.content,
    "role": first.choices[0].message.role,
    "finish": first.choices[0].finish_reason,
    "prompt_tokens": first.usage.prompt_tokens,
    "total_tokens": first.usage.total_tokens,
}

# Streamed, in the same conversation, with the usage chunk.
text, finishes, usage, roles, ids = "", [], None, [], set()
stream = client.chat.completions.create(
    model="ada",
    messages=[{"role": "user", "content": "and a second message"}],
    user="alice",
    stream=True,
    stream_options={"include_usage": True},
)
chunks = 0
for chunk in stream:
    chunks += 1
    ids.add(chunk.id)
    if chunk.usage is not None:
        usage = chunk.usage.prompt_tokens
    for choice in chunk.choices:
        if choice.delta.role:
            roles.append(choice.delta.role)
        if choice.delta.content:
            text += choice.delta.content
        if choice.finish_reason:
            finishes.append(choice.finish_reason)
out["streamed"] = {
    "content": text,
    "finishes": finishes,
    "prompt_tokens": usage,
    "roles": roles,
    "ids": len(ids),
    "chunks": chunks,
}

# A tool runs on the server, through the agent's own tools.
tool = client.chat.completions.create(
    model="ada",
    messages=[{"role": "user", "content": '/tool echo {"text": "from a tool"}'}],
    extra_headers={"X-Session-Id": "tools-here"},
)
out["tool"] = tool.choices[0].message.content

# A client that resends the whole history stays in one session.
history = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "opening line"},
]
a = client.chat.completions.create(model="ada", messages=history)
history += [{"role": "assistant", "content": a.choices[0].message.content}]
history += [{"role": "user", "content": [{"type": "text", "text": "follow-up"}]}]
b = client.chat.completions.create(model="ada", messages=history)
out["history"] = {
    "first_prompt": a.usage.prompt_tokens,
    "second_prompt": b.usage.prompt_tokens,
    "content": b.choices[0].message.content,
}

# The operator reaches another tenant's agent as `tenant/handle`.
out["operator_rival"] = client.chat.completions.create(
    model="rival/bob", messages=[{"role": "user", "content": "hi bob"}]
).choices[0].message.content

# Errors, as OpenAI's clients raise them.
hi = [{"role": "user", "content": "hi"}]
out["errors"] = {
    "unknown_model": error_of(lambda: client.chat.completions.create(model="nobody", messages=hi)),
    "rival_reaches_ada": error_of(lambda: rival.chat.completions.create(model="ada", messages=hi)),
    "rival_names_default": error_of(
        lambda: rival.chat.completions.create(model="default/ada", messages=hi)
    ),
    "two_choices": error_of(lambda: client.chat.completions.create(model="ada", messages=hi, n=2)),
    "client_tools": error_of(
        lambda: client.chat.completions.create(
            model="ada",
            messages=hi,
            tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
        )
    ),
    "ends_with_assistant": error_of(
        lambda: client.chat.completions.create(
            model="ada", messages=hi + [{"role": "assistant", "content": "x"}]
        )
    ),
    "bad_token": error_of(
        lambda: openai.OpenAI(base_url=base + "/v1", api_key="nope", max_retries=0)
        .chat.completions.create(model="ada", messages=hi)
    ),
}
print(json.dumps(out))
