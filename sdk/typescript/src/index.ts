/**
 * A client for Clade's HTTP API: agents, events (sent, or sent and waited for), sessions, their
 * turns and their live event streams (server-sent events, resumed where they broke off), and the
 * OpenAI-compatible chat route.
 *
 * Every body is typed from the gateway's OpenAPI document (`docs/openapi.json`, itself generated
 * from the `clade-protocol` crate), so a change of the wire shows up here as a type error.
 */

import type { components } from "./schema.js";

type Schemas = components["schemas"];
export type Agent = Schemas["AgentResponse"];
export type AgentList = Schemas["AgentListResponse"];
export type CreateAgent = Schemas["CreateAgentParams"];
export type EventParams = Schemas["EventParams"];
export type EventResponse = Schemas["EventResponse"];
export type Session = Schemas["SessionResponse"];
export type SessionList = Schemas["SessionListResponse"];
export type TurnList = Schemas["TurnListResponse"];
export type ChatCompletion = Schemas["ChatCompletion"];
export type ErrorBody = Schemas["ErrorResponse"];

/** An error the gateway answered with: its HTTP status, its code (`docs/errors.md`) and why. */
export class CladeError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    /** Seconds to wait before trying again, when the gateway said (`Retry-After`). */
    readonly retryAfter?: number,
  ) {
    super(`${message} (HTTP ${status}, ${code})`);
    this.name = "CladeError";
  }
}

/** One event of a session's stream: its kind (`turn.finished`, `text.delta`, …) and data. */
export interface StreamEvent {
  /** The stream position to resume after; none for live-only `text.delta`. */
  id?: string;
  event: string;
  data: unknown;
}

export interface ClientOptions {
  /** The gateway, such as `http://127.0.0.1:7420`. */
  baseUrl: string;
  /** A tenant token (`clade tokens create`). */
  token: string;
  /** The fetch to use (the global one by default). */
  fetch?: typeof fetch;
}

export class Clade {
  readonly agents: Agents;
  readonly events: Events;
  readonly sessions: Sessions;
  readonly chat: Chat;
  private readonly baseUrl: string;
  private readonly token: string;
  private readonly doFetch: typeof fetch;

  constructor(options: ClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.token = options.token;
    this.doFetch = options.fetch ?? fetch;
    this.agents = new Agents(this);
    this.events = new Events(this);
    this.sessions = new Sessions(this);
    this.chat = new Chat(this);
  }

  /** @internal A request to the API; its JSON answer, or a `CladeError`. */
  async request<T>(
    method: string,
    path: string,
    body?: unknown,
    headers: Record<string, string> = {},
  ): Promise<T> {
    const response = await this.send(method, path, body, headers);
    if (response.status === 204) {
      return undefined as T;
    }
    return (await response.json()) as T;
  }

  /** @internal The response, once its status says it succeeded. */
  async send(
    method: string,
    path: string,
    body?: unknown,
    headers: Record<string, string> = {},
  ): Promise<Response> {
    const init: RequestInit = {
      method,
      headers: {
        authorization: `Bearer ${this.token}`,
        ...(body === undefined ? {} : { "content-type": "application/json" }),
        ...headers,
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    };
    let response: Response;
    try {
      response = await this.doFetch(`${this.baseUrl}${path}`, init);
    } catch (cause) {
      throw new CladeError(
        0,
        "unreachable",
        `cannot reach the gateway at ${this.baseUrl}: is \`clade serve\` running? (${String(cause)})`,
      );
    }
    if (!response.ok) {
      throw await errorOf(response);
    }
    return response;
  }
}

async function errorOf(response: Response): Promise<CladeError> {
  const retry = response.headers.get("retry-after");
  const text = await response.text();
  let code = "http_error";
  let message = text || response.statusText;
  try {
    const body = JSON.parse(text) as Partial<ErrorBody> & { error?: { code?: unknown } };
    if (body.error && typeof body.error.message === "string") {
      message = body.error.message;
      code = typeof body.error.code === "string" ? body.error.code : code;
    }
  } catch {
    // Not JSON: the text is the message.
  }
  return new CladeError(response.status, code, message, retryAfterSeconds(retry));
}

/** `Retry-After` in seconds: a number of seconds, or an HTTP date. */
function retryAfterSeconds(header: string | null): number | undefined {
  if (!header) return undefined;
  const seconds = Number(header);
  if (Number.isFinite(seconds)) return Math.max(0, seconds);
  const at = Date.parse(header);
  return Number.isNaN(at) ? undefined : Math.max(0, Math.ceil((at - Date.now()) / 1000));
}

/** Waits `ms`, or less if `signal` aborts. */
function pause(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}

const path = encodeURIComponent;

class Agents {
  constructor(private readonly client: Clade) {}

  /** A page of the token's agents, by handle; `cursor` is the last page's `next_cursor`. */
  list(options: { limit?: number; cursor?: string } = {}): Promise<AgentList> {
    const query = new URLSearchParams();
    if (options.limit !== undefined) query.set("limit", String(options.limit));
    if (options.cursor !== undefined) query.set("cursor", options.cursor);
    const suffix = query.size ? `?${query}` : "";
    return this.client.request("GET", `/v1/agents${suffix}`);
  }

  get(handle: string): Promise<Agent> {
    return this.client.request("GET", `/v1/agents/${path(handle)}`);
  }

  create(params: CreateAgent): Promise<Agent> {
    return this.client.request("POST", "/v1/agents", params);
  }

  delete(handle: string): Promise<void> {
    return this.client.request("DELETE", `/v1/agents/${path(handle)}`);
  }
}

class Events {
  constructor(private readonly client: Clade) {}

  /**
   * Sends an event: answered once it is durably stored, or with `wait: true` once its turn has
   * ended (with the reply). Repeating an `idempotency_key` returns the first answer.
   */
  send(params: EventParams): Promise<EventResponse> {
    return this.client.request("POST", "/v1/events", params);
  }
}

class Sessions {
  constructor(private readonly client: Clade) {}

  /**
   * A page of sessions, most recently active first, of one agent or all; `cursor` is the last
   * page's `next_cursor`.
   */
  list(options: { agent?: string; limit?: number; cursor?: string } = {}): Promise<SessionList> {
    const query = new URLSearchParams();
    if (options.agent !== undefined) query.set("agent", options.agent);
    if (options.limit !== undefined) query.set("limit", String(options.limit));
    if (options.cursor !== undefined) query.set("cursor", options.cursor);
    const suffix = query.size ? `?${query}` : "";
    return this.client.request("GET", `/v1/sessions${suffix}`);
  }

  get(id: string): Promise<Session> {
    return this.client.request("GET", `/v1/sessions/${path(id)}`);
  }

  /** A page of the session's turns, oldest first; `cursor` is the last page's `next_cursor`. */
  turns(id: string, options: { limit?: number; cursor?: string } = {}): Promise<TurnList> {
    const query = new URLSearchParams();
    if (options.limit !== undefined) query.set("limit", String(options.limit));
    if (options.cursor !== undefined) query.set("cursor", options.cursor);
    const suffix = query.size ? `?${query}` : "";
    return this.client.request("GET", `/v1/sessions/${path(id)}/turns${suffix}`);
  }

  /**
   * The session's events as they happen (and, from `after`, the ones after that position). A
   * broken or closed connection is resumed from the last event seen, after a pause that grows
   * from 0.5 s to 10 s; `retries` failures in a row end it with the last error. Stop by
   * breaking out of the loop or aborting `signal`.
   */
  async *stream(
    id: string,
    options: { after?: string; signal?: AbortSignal; retries?: number } = {},
  ): AsyncGenerator<StreamEvent> {
    let last = options.after;
    let failures = 0;
    let attempt = 0;
    const retries = options.retries ?? 3;
    while (!options.signal?.aborted) {
      const headers: Record<string, string> = { accept: "text/event-stream" };
      if (last !== undefined) headers["last-event-id"] = last;
      if (attempt > 0) {
        await pause(Math.min(10_000, 500 * 2 ** Math.min(attempt - 1, 5)), options.signal);
        if (options.signal?.aborted) return;
      }
      attempt += 1;
      let response: Response;
      try {
        response = await this.client.send("GET", `/v1/sessions/${path(id)}/events`, undefined, headers);
      } catch (err) {
        // The gateway refused (a bad token, no such session): trying again cannot help.
        if (err instanceof CladeError && err.status !== 0 && err.status !== 503) throw err;
        if (++failures > retries) throw err;
        continue;
      }
      if (!response.body) return;
      try {
        for await (const event of parseSse(response.body, options.signal)) {
          failures = 0;
          attempt = 0;
          if (event.id !== undefined) last = event.id;
          if (event.event === "error") {
            const data = event.data as Partial<ErrorBody> | undefined;
            throw new CladeError(401, "stream_ended", data?.error?.message ?? "the stream ended");
          }
          yield event;
        }
      } catch (err) {
        if (err instanceof CladeError || options.signal?.aborted) throw err;
        if (++failures > retries) throw err;
      }
    }
  }
}

class Chat {
  constructor(private readonly client: Clade) {}

  /**
   * Asks an agent through the OpenAI-compatible route (not streamed): `session` names the
   * conversation, which the gateway keeps.
   */
  complete(agent: string, message: string, session?: string): Promise<ChatCompletion> {
    const headers: Record<string, string> = session ? { "x-session-id": session } : {};
    return this.client.request(
      "POST",
      "/v1/chat/completions",
      { model: agent, messages: [{ role: "user", content: message }] },
      headers,
    );
  }
}

/** Server-sent events (the WHATWG format) from a byte stream. */
export async function* parseSse(
  body: ReadableStream<Uint8Array>,
  signal?: AbortSignal,
): AsyncGenerator<StreamEvent> {
  const decoder = new TextDecoder();
  const reader = body.getReader();
  const onAbort = () => void reader.cancel().catch(() => {});
  signal?.addEventListener("abort", onAbort, { once: true });
  let buffer = "";
  let fields: { id?: string; event?: string; data: string[] } = { data: [] };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let newline: number;
      while ((newline = buffer.search(/\r\n|\n|\r/)) >= 0) {
        // A `\r` that ends what has come may be the first half of a `\r\n`: wait for more.
        if (newline === buffer.length - 1 && buffer.endsWith("\r")) break;
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + (buffer.startsWith("\r\n", newline) ? 2 : 1));
        if (line === "") {
          if (fields.data.length > 0) {
            const text = fields.data.join("\n");
            let data: unknown = text;
            try {
              data = JSON.parse(text);
            } catch {
              // Not JSON: the text itself.
            }
            yield { id: fields.id, event: fields.event ?? "message", data };
          }
          fields = { data: [] };
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const name = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (name === "data") fields.data.push(value);
        else if (name === "event") fields.event = value;
        else if (name === "id") fields.id = value;
      }
    }
  } finally {
    signal?.removeEventListener("abort", onAbort);
    // A consumer that stops reading (a `break`) closes the connection, or it would stay open.
    await reader.cancel().catch(() => {});
    reader.releaseLock();
  }
}
