"""Drives Clade's MCP server with the official `mcp` SDK (PyPI), unchanged: over streamable
HTTP with a tenant token, and over stdio through `clade mcp serve`.

Usage: mcp_client.py BASE_URL OPERATOR_TOKEN RIVAL_TOKEN READ_TOKEN CLADE_BIN DATA_DIR LIMITED_TOKEN
Prints one JSON object with what each call returned; the Rust test asserts on it.
"""

import asyncio
import json
import sys

import httpx2
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

base, operator_token, rival_token, read_token, clade, data_dir, limited_token = sys.argv[1:8]


def over_http(path, token, **options):
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    return Client(streamable_http_client(base + path, http_client=http), **options)


def text_of(result):
    return "".join(block.text for block in result.content if block.type == "text")


def called(result):
    return {
        "text": text_of(result),
        "is_error": bool(result.is_error),
        "structured": result.structured_content,
    }


async def error_of(call):
    try:
        await call
    except MCPError as err:
        return {"code": err.error.code, "message": err.error.message}
    return None


async def operator(out):
    async with over_http("/v1/mcp", operator_token) as client:
        tools = (await client.list_tools()).tools
        out["tools"] = [t.name for t in tools]
        out["tool_schema"] = tools[0].input_schema if tools else None
        out["first"] = called(
            await client.call_tool("ada", {"message": "hello mcp", "session": "s1"})
        )
        out["second"] = called(
            await client.call_tool("ada", {"message": "again", "session": "s1"})
        )
        out["other_session"] = called(await client.call_tool("ada", {"message": "elsewhere"}))
        progress = []

        async def on_progress(value, total, message):
            progress.append({"progress": value, "message": message})

        out["streamed"] = called(
            await client.call_tool(
                "ada",
                {"message": "a streamed answer of several words", "session": "s2"},
                progress_callback=on_progress,
            )
        )
        out["progress"] = progress
        out["tool"] = called(
            await client.call_tool("ada", {"message": '/tool echo {"text": "from a tool"}'})
        )
        out["wrong_schema"] = called(await client.call_tool("ada", {"msg": "no message"}))
        out["empty_message"] = called(await client.call_tool("ada", {"message": "  "}))
        out["unknown_tool"] = await error_of(client.call_tool("nobody", {"message": "hi"}))
        resources = (await client.list_resources()).resources
        out["resources"] = [{"uri": str(r.uri), "name": r.name} for r in resources]
        session = out["first"]["structured"]["session_id"]
        read = await client.read_resource(f"clade://sessions/{session}")
        out["transcript"] = read.contents[0].text
        out["transcript_mime"] = read.contents[0].mime_type
        out["missing_resource"] = await error_of(
            client.read_resource("clade://sessions/01a20a00-0000-7000-8000-000000000000")
        )
        out["foreign_uri"] = await error_of(client.read_resource("file:///etc/passwd"))
        templates = (await client.list_resource_templates()).resource_templates
        out["templates"] = [t.uri_template for t in templates]
        out["ada_session"] = session
        memories = await client.read_resource("clade://agents/ada/memories")
        out["memories"] = memories.contents[0].text
        out["missing_agent_memories"] = await error_of(
            client.read_resource("clade://agents/nobody/memories")
        )

    # The same, forcing the initialize handshake (no `server/discover` probe first).
    async with over_http("/v1/agents/ada/mcp", operator_token, mode="legacy") as client:
        out["one_agent_tools"] = [t.name for t in (await client.list_tools()).tools]
        out["one_agent_call"] = called(await client.call_tool("ada", {"message": "legacy"}))


async def rival(out):
    async with over_http("/v1/mcp", rival_token) as client:
        out["rival_tools"] = [t.name for t in (await client.list_tools()).tools]
        out["rival_calls_ada"] = await error_of(client.call_tool("ada", {"message": "hi"}))
        out["rival_resources"] = [str(r.uri) for r in (await client.list_resources()).resources]
        out["rival_reads_ada"] = await error_of(
            client.read_resource(f"clade://sessions/{out['ada_session']}")
        )
        out["rival_reads_ada_memories"] = await error_of(
            client.read_resource("clade://agents/ada/memories")
        )
        out["rival_bob"] = called(await client.call_tool("bob", {"message": "hi bob"}))
    try:
        async with over_http("/v1/agents/ada/mcp", rival_token) as client:
            await client.list_tools()
        out["rival_one_agent"] = "connected"
    except Exception as err:  # the SDK's own error for a 404 at connect
        out["rival_one_agent"] = type(err).__name__ + ": " + str(err)


async def read_only(out):
    async with over_http("/v1/mcp", read_token) as client:
        out["read_only_tools"] = [t.name for t in (await client.list_tools()).tools]
        out["read_only_call"] = await error_of(client.call_tool("ada", {"message": "hi"}))


async def limited(out):
    """A token limited to the agent `cy`: it sees and asks `cy` alone."""
    async with over_http("/v1/mcp", limited_token) as client:
        out["limited_tools"] = [t.name for t in (await client.list_tools()).tools]
        out["limited_calls_ada"] = await error_of(client.call_tool("ada", {"message": "hi"}))
        out["limited_resources"] = [str(r.uri) for r in (await client.list_resources()).resources]
        out["limited_reads_ada_memories"] = await error_of(
            client.read_resource("clade://agents/ada/memories")
        )


async def stdio(out):
    params = StdioServerParameters(
        command=clade,
        args=["--data-dir", data_dir, "--agent", "ada", "mcp", "serve", "--server", base],
    )
    async with Client(params) as client:
        out["stdio_tools"] = [t.name for t in (await client.list_tools()).tools]
        progress = []

        async def on_progress(value, total, message):
            progress.append(message)

        out["stdio_call"] = called(
            await client.call_tool(
                "ada", {"message": "over stdio", "session": "pipe"}, progress_callback=on_progress
            )
        )
        out["stdio_progress"] = progress
        out["stdio_unknown_tool"] = await error_of(client.call_tool("bob", {"message": "hi"}))


async def raw(out):
    """What the SDK never sends: a bad body gets a JSON-RPC error and a 4xx."""
    headers = {
        "Authorization": f"Bearer {operator_token}",
        "Accept": "application/json, text/event-stream",
    }
    async with httpx2.AsyncClient() as http:
        cases = {
            "not_json": ("{nope", {}),
            "batch": (json.dumps([{"jsonrpc": "2.0", "id": 1, "method": "ping"}]), {}),
            "no_method": (json.dumps({"jsonrpc": "2.0", "id": 1}), {}),
            "bad_version": (
                json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"}),
                {"MCP-Protocol-Version": "1999-01-01"},
            ),
            "unknown_method": (json.dumps({"jsonrpc": "2.0", "id": 7, "method": "x/y"}), {}),
            "notification": (
                json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}),
                {},
            ),
        }
        for name, (body, extra) in cases.items():
            response = await http.post(
                base + "/v1/mcp", content=body, headers={**headers, **extra}
            )
            try:
                answer = response.json()
            except ValueError:
                answer = None
            out.setdefault("raw", {})[name] = {"status": response.status_code, "body": answer}
        response = await http.get(base + "/v1/mcp", headers=headers)
        out["raw"]["get"] = {"status": response.status_code}


async def main():
    out = {}
    await operator(out)
    await rival(out)
    await read_only(out)
    await limited(out)
    await stdio(out)
    await raw(out)
    print(json.dumps(out))


asyncio.run(main())
