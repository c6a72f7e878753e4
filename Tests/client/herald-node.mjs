// Test support for herald.test.mjs: a real standalone `herald serve` on a free loopback port,
// its HTTP API, and a WebSocket class the tests can reach into (drop, cut off, count attempts).
import { spawn } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { request } from "node:http";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * An HTTP request on a connection of its own (not fetch): Node's WebSocket shares fetch's
 * keep-alive pool and may send its upgrade on a used connection, which Herald answers 307
 * (an upgrade must be the first request of its connection), failing the attempt.
 */
export function http(method, url, body, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, agent: false, headers: { Connection: "close", ...headers } }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (c) => (text += c));
      res.on("end", () => resolve({ status: res.statusCode, text, json: () => JSON.parse(text) }));
    });
    req.setTimeout(10000, () => req.destroy(new Error(`${method} ${url}: timed out`)));
    req.on("error", reject);
    req.end(body);
  });
}

/** Polls `fn` until it returns something truthy; throws `what` after `timeout` ms. */
export async function until(fn, what, timeout = 5000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await sleep(20);
  }
}

/** A free port below the kernel's ephemeral range (as HeraldTestSupport.freePort does). */
export async function freePort() {
  for (let i = 0; i < 64; i++) {
    const port = 20000 + Math.floor(Math.random() * 12000);
    const ok = await new Promise((resolve) => {
      const s = createServer();
      s.once("error", () => resolve(false));
      s.listen(port, "127.0.0.1", () => s.close(() => resolve(true)));
    });
    if (ok) return port;
  }
  throw new Error("no free port in 20000-31999");
}

/** A standalone node: `herald serve --dev` on 127.0.0.1:<free port>. */
export class HeraldNode {
  static async start(bin = process.env.HERALD_BIN || "/work/main/.build/debug/herald", extra = []) {
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), "herald-js-"));
    const log = join(dir, "herald.log");
    const fd = openSync(log, "w");
    const proc = spawn(bin, ["serve", "--dev", "--host", "127.0.0.1", "--port", String(port), "--log-level", "warning", ...extra], {
      stdio: ["ignore", fd, fd],
    });
    const node = new HeraldNode(proc, port, log, dir);
    try {
      await until(async () => {
        if (proc.exitCode !== null) throw new Error(`herald exited with ${proc.exitCode}: ${node.logTail()}`);
        try { return (await http("GET", `${node.http}/healthz`)).status === 200; } catch { return false; }
      }, "herald /healthz", 30000);
    } catch (err) {
      await node.stop();
      throw err;
    }
    return node;
  }

  constructor(proc, port, log, dir) {
    this.proc = proc;
    this.dir = dir;
    this.port = port;
    this.log = log;
    this.http = `http://127.0.0.1:${port}`;
    this.ws = `ws://127.0.0.1:${port}/ws`;
  }

  logTail() {
    try { return readFileSync(this.log, "utf8").split("\n").slice(-20).join("\n"); } catch { return ""; }
  }

  /** SIGTERM, then SIGKILL after 5 s; removes the log. */
  async stop() {
    if (this.proc.exitCode === null && this.proc.signalCode === null) {
      const exited = new Promise((r) => this.proc.once("exit", r));
      this.proc.kill("SIGTERM");
      const t = setTimeout(() => this.proc.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(t);
    }
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** POST /api/<route>; returns the parsed body ({code, msg, data}). */
  async api(route, body = {}, headers = {}) {
    const r = await http("POST", `${this.http}/api/${route}`, JSON.stringify(body), { "Content-Type": "application/json", ...headers });
    return r.json();
  }

  /** Registers a fresh system; returns a handle whose call() carries its SystemId (and secret). */
  async register(options = {}) {
    const systemId = `js-${randomBytes(6).toString("hex")}`;
    const answer = await this.api("register", { systemId, ...options });
    if (answer.code !== 0) throw new Error(`register: ${JSON.stringify(answer)}`);
    const headers = { SystemId: systemId };
    if (options.secret) headers.Authorization = `Bearer ${options.secret}`;
    const node = this;
    return {
      id: systemId,
      call: (route, body) => node.api(route, body, headers),
      /** A successful call's data; throws on any other answer. */
      async ok(route, body) {
        const a = await node.api(route, body, headers);
        if (a.code !== 0) throw new Error(`${route} ${JSON.stringify(body)}: ${JSON.stringify(a)}`);
        return a.data;
      },
      async send(route, body) { return (await this.ok(route, body)).messageId; },
    };
  }

  /** The steps of a message's trace (/admin/trace; --dev needs no admin token). */
  async trace(messageId) {
    const r = await http("GET", `${this.http}/admin/trace/${messageId}`);
    return r.json().data?.steps ?? [];
  }
}

/** An HS256 JWT (what a business system's backend mints for its browsers). */
export function jwt(secret, claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}`;
  return `${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`;
}

/**
 * A WebSocket class for HeraldClient's `WebSocket` option that records every socket and URL,
 * and can cut the client off: while `reachable` is false every new socket goes to a port
 * where nothing listens (the attempt fails like a dead node's); with `swallowPings` the
 * client's "ping" frames never leave.
 */
export async function tracker() {
  const t = { sockets: [], urls: [], times: [], sent: [], reachable: true, swallowPings: false, deadPort: await freePort() };
  t.WebSocket = class TrackedWebSocket extends WebSocket {
    constructor(url) {
      const target = new URL(url);
      if (!t.reachable) target.port = String(t.deadPort);
      super(target.href);
      t.urls.push(url);
      t.times.push(Date.now());
      t.sockets.push(this);
    }
    send(data) {
      if (t.swallowPings && data === "ping") return;
      t.sent.push(data);
      super.send(data);
    }
  };
  /** The current socket, closed from the client side as a lost connection would be. */
  t.drop = () => t.sockets.at(-1).close();
  return t;
}

/** Every event of `client`, in order: [{name, detail}]. */
export function record(client) {
  const names = ["open", "welcome", "resumed", "resumeFailed", "message", "presence", "session", "state", "close", "error", "raw"];
  const events = [];
  for (const name of names) client.on(name, (detail) => events.push({ name, detail }));
  events.of = (name) => events.filter((e) => e.name === name).map((e) => e.detail);
  return events;
}
