// The SSE parser on its own: how the bytes are cut must not change the events.

import { test } from "node:test";
import assert from "node:assert/strict";

import { parseSse, type StreamEvent } from "../src/index.js";

async function parse(chunks: string[]): Promise<StreamEvent[]> {
  const encoder = new TextEncoder();
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(encoder.encode(chunk));
      controller.close();
    },
  });
  const events: StreamEvent[] = [];
  for await (const event of parseSse(body)) events.push(event);
  return events;
}

test("events are the same however the stream is cut, CRLF split included", async () => {
  const stream =
    'id: 7\r\nevent: turn.finished\r\ndata: {"reply":\r\ndata: "hi"}\r\n\r\n: keep-alive\r\n\r\nevent: text.delta\r\ndata: plain text\r\n\r\n';
  const whole = await parse([stream]);
  assert.deepEqual(whole, [
    { id: "7", event: "turn.finished", data: { reply: "hi" } },
    { id: undefined, event: "text.delta", data: "plain text" },
  ]);
  for (let cut = 1; cut < stream.length; cut++) {
    assert.deepEqual(await parse([stream.slice(0, cut), stream.slice(cut)]), whole, `cut at ${cut}`);
  }
  const byByte = await parse([...stream]);
  assert.deepEqual(byByte, whole);
});

test("an event without its closing blank line is not delivered", async () => {
  assert.deepEqual(await parse(["data: 1\n\ndata: 2\n"]), [
    { id: undefined, event: "message", data: 1 },
  ]);
});
