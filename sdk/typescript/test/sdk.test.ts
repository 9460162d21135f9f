// The SDK against a real `clade serve` (the binary in CLADE_BIN) on a fresh data dir: every
// call goes over HTTP to the gateway, nothing is mocked.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

import { Clade, CladeError, type StreamEvent } from "../src/index.js";

const bin = process.env.CLADE_BIN;
if (!bin) {
  throw new Error("CLADE_BIN must name the clade binary (cargo build, then target/debug/clade)");
}
const dataDir = mkdtempSync(join(tmpdir(), "clade-sdk-"));
let server: ChildProcess;
let url = "";
let operator: Clade;
let rival: Clade;

function clade(...args: string[]): string {
  return execFileSync(bin!, ["--data-dir", dataDir, ...args], { encoding: "utf8" }).trim();
}

before(async () => {
  clade("tenants", "create", "rival");
  clade("--tenant", "rival", "agents", "create", "bob");
  const rivalToken = clade("--tenant", "rival", "tokens", "create", "--scope", "admin");
  server = spawn(bin, ["--data-dir", dataDir, "serve", "--listen", "127.0.0.1:0"], {
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, RUST_LOG: "warn" },
  });
  const lines = createInterface({ input: server.stdout! });
  const first: string = await new Promise((resolve, reject) => {
    lines.once("line", resolve);
    server.once("exit", (code) => reject(new Error(`clade serve exited (${code})`)));
  });
  url = first.split(/\s+/).find((word) => word.startsWith("http://")) ?? "";
  assert.ok(url, `no address in ${first}`);
  const token = readFileSync(join(dataDir, "token"), "utf8").trim();
  operator = new Clade({ baseUrl: url, token });
  rival = new Clade({ baseUrl: url, token: rivalToken });
});

after(() => {
  server?.kill();
  rmSync(dataDir, { recursive: true, force: true });
});

const source = { platform: "sdk", channel: "c1", actor: "me" };

test("agents are created, listed and read; another tenant's are not found", async () => {
  const ada = await operator.agents.create({ handle: "ada" });
  assert.equal(ada.handle, "ada");
  const page = await operator.agents.list();
  assert.deepEqual(page.items.map((a) => a.handle), ["ada"]);
  assert.equal((await operator.agents.get("ada")).id, ada.id);
  const seen = await rival.agents.list();
  assert.deepEqual(seen.items.map((a) => a.handle), ["bob"]);
  await assert.rejects(rival.agents.get("ada"), (err: unknown) => {
    assert.ok(err instanceof CladeError);
    assert.equal(err.status, 404);
    assert.equal(err.code, "agent_not_found");
    return true;
  });
});

test("an event waited for comes back with the reply; a repeated key with the same event", async () => {
  const answer = await operator.events.send({
    agent: "ada",
    text: "hello",
    source,
    wait: true,
    idempotency_key: "k-1",
  });
  assert.equal(answer.status, "completed");
  assert.equal(answer.reply?.text, "echo: hello");
  const again = await operator.events.send({
    agent: "ada",
    text: "hello",
    source,
    wait: true,
    idempotency_key: "k-1",
  });
  assert.equal(again.event_id, answer.event_id);
  const turns = await operator.sessions.turns(answer.session_id);
  assert.equal(turns.items.length, 1);
  const listed = await operator.sessions.list({ agent: "ada" });
  assert.ok(listed.items.some((s) => s.id === answer.session_id));
  // Page by page, the same sessions.
  await operator.events.send({ agent: "ada", text: "other", source: { ...source, actor: "you" } });
  const ids: string[] = [];
  let cursor: string | undefined;
  do {
    const page = await operator.sessions.list({ agent: "ada", limit: 1, cursor });
    ids.push(...page.items.map((s) => s.id));
    cursor = page.next_cursor ?? undefined;
  } while (cursor);
  const whole = await operator.sessions.list({ agent: "ada" });
  assert.deepEqual(ids, whole.items.map((s) => s.id));
  assert.ok(ids.length >= 2);
  await assert.rejects(rival.sessions.get(answer.session_id), /session_not_found/);
});

test("a session's stream carries its turn live, text deltas and all", async () => {
  const first = await operator.events.send({ agent: "ada", text: "open", source, wait: true });
  const controller = new AbortController();
  const seen: StreamEvent[] = [];
  const streamed = (async () => {
    for await (const event of operator.sessions.stream(first.session_id, {
      signal: controller.signal,
    })) {
      seen.push(event);
      if (event.event === "turn.finished") {
        const data = event.data as { reply?: string };
        if (data.reply === "echo: a few words streamed live") break;
      }
    }
  })();
  // The stream is open before the event is sent: its turn is seen live.
  await new Promise((resolve) => setTimeout(resolve, 300));
  await operator.events.send({ agent: "ada", text: "a few words streamed live", source });
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    streamed,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error("no turn.finished within 15 s")), 15000);
    }),
  ]);
  clearTimeout(timer);
  controller.abort();
  const kinds = seen.map((e) => e.event);
  assert.ok(kinds.includes("turn.started"), kinds.join(","));
  const deltas = seen.filter((e) => e.event === "text.delta");
  assert.ok(deltas.length >= 2, `not streamed: ${kinds.join(",")}`);
  const text = deltas.map((e) => (e.data as { text: string }).text).join("");
  assert.equal(text, "echo: a few words streamed live");
  // The turn's end is stored (the outbox): it has a stream position to resume after.
  const finished = seen.filter((e) => e.event === "turn.finished");
  assert.ok(finished.length > 0 && finished.every((e) => e.id !== undefined), kinds.join(","));
});

test("the OpenAI-compatible route answers as the agent, in the session named", async () => {
  const completion = await operator.chat.complete("ada", "hi there", "sdk-chat");
  assert.equal(completion.choices[0]?.message.content, "echo: hi there");
  await assert.rejects(rival.chat.complete("ada", "hi"), (err: unknown) => {
    assert.ok(err instanceof CladeError);
    assert.equal(err.status, 404);
    assert.equal(err.code, "model_not_found");
    return true;
  });
});

test("errors name what is wrong: a bad token, a bad body, no gateway", async () => {
  const stranger = new Clade({ baseUrl: url, token: "clade_not-a-token" });
  await assert.rejects(stranger.agents.list(), (err: unknown) => {
    assert.ok(err instanceof CladeError);
    assert.equal(err.status, 401);
    assert.equal(err.code, "invalid_token");
    return true;
  });
  await assert.rejects(operator.agents.create({ handle: "Not A Handle" }), (err: unknown) => {
    assert.ok(err instanceof CladeError);
    assert.equal(err.status, 400);
    assert.match(err.message, /handle/);
    return true;
  });
  const nowhere = new Clade({ baseUrl: "http://127.0.0.1:9", token: "clade_x" });
  await assert.rejects(nowhere.agents.list(), (err: unknown) => {
    assert.ok(err instanceof CladeError);
    assert.equal(err.code, "unreachable");
    assert.match(err.message, /clade serve/);
    return true;
  });
});
