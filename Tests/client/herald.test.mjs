// herald.js against a real standalone Herald node (started here, on a free port).
// Run: Tests/client/run <herald binary>   (or: HERALD_BIN=... node [--experimental-websocket] --test Tests/client/)
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { readFileSync } from "node:fs";
import * as herald from "../../clients/herald.js";
import { HeraldClient, backoffDelay, connect, isFinalClose } from "../../clients/herald.js";
import { HeraldNode, jwt, record, sleep, tracker, until } from "./herald-node.mjs";

/** Every test is bounded: a hang fails that test instead of the run. */
const T = { timeout: 20000 };

let node;
const clients = [];
/** A client that is closed after the test file whatever happens. */
function client(options) {
  const c = new HeraldClient({ url: node.ws, pingInterval: 0, reconnect: { initialDelay: 50, maxDelay: 200 }, ...options });
  clients.push(c);
  return c;
}
const messages = (events) => events.of("message");
const ids = (events) => messages(events).map((m) => m.messageId);

before(async () => { node = await HeraldNode.start(); });
after(async () => {
  for (const c of clients) c.close();
  await node?.stop();
});

describe("connecting", () => {
  test("connects, gets the welcome with its clientId and a session token; state goes connecting -> open", T, async () => {
    const sys = await node.register();
    const c = client({ systemId: sys.id });
    const ev = record(c);
    c.connect();
    const w = await c.once("welcome");
    assert.match(w.clientId, /^[A-Za-z0-9_-]{20,128}$/);
    assert.equal(w.resumed, false);
    assert.equal(w.reason, null);
    assert.equal(c.clientId, w.clientId);
    assert.equal(c.state, "open");
    assert.deepEqual(ev.of("state").map((s) => s.state), ["connecting", "open"]);
    assert.equal(ev.of("open").length, 1);
    const s = await until(() => ev.of("session")[0], "the 1003 session frame");
    assert.equal(typeof s.session, "string");
    assert.ok(s.session.length > 20);
    assert.deepEqual(ev.of("resumed"), []);
    assert.deepEqual(ev.of("resumeFailed"), [], "a first connect asks no resume");
    const status = await sys.ok("client_status", { clientId: w.clientId });
    assert.equal(status.online, true);
  });

  test("connect(url, options) is new HeraldClient({...options, url}).connect(); http URLs become ws", T, async () => {
    const sys = await node.register();
    const c = connect(node.http + "/ws", { systemId: sys.id, pingInterval: 0 });
    clients.push(c);
    assert.ok(c instanceof HeraldClient);
    assert.equal(c.state, "connecting");
    const w = await c.once("welcome");
    assert.ok(w.clientId);
  });

  test("an unknown systemId: error with the -1001 frame, close 1008, no reconnect", T, async () => {
    const t = await tracker();
    const c = client({ systemId: "no-such-system", WebSocket: t.WebSocket });
    const ev = record(c);
    c.connect();
    const closed = await c.once("close");
    assert.equal(closed.code, 1008);
    assert.equal(closed.reason, "unknown system");
    assert.equal(closed.willReconnect, false);
    assert.equal(ev.of("error")[0].code, -1001);
    assert.match(ev.of("error")[0].message, /unknown systemId/);
    await sleep(600);
    assert.equal(c.state, "closed");
    assert.equal(t.urls.length, 1, "no second attempt");
    assert.deepEqual(ev.of("welcome"), []);
  });

  test("client auth: a bad JWT is refused (4010, close 1008 unauthorized) and not retried; a token function is called on every attempt", T, async () => {
    const secret = "s".repeat(40);
    const sys = await node.register({ secret, clientAuth: true });
    const t = await tracker();
    const bad = client({ systemId: sys.id, token: "not.a.jwt", WebSocket: t.WebSocket });
    const ev = record(bad);
    bad.connect();
    const closed = await bad.once("close");
    assert.deepEqual([closed.code, closed.reason, closed.willReconnect], [1008, "unauthorized", false]);
    assert.equal(ev.of("error")[0].code, 4010);
    await sleep(600);
    assert.equal(t.urls.length, 1);
    assert.equal(bad.state, "closed");

    let calls = 0;
    const t2 = await tracker();
    const good = client({
      systemId: sys.id, WebSocket: t2.WebSocket,
      token: async () => { calls++; return jwt(secret, { sub: "ann", exp: Math.floor(Date.now() / 1000) + 600 }); },
    });
    const ev2 = record(good);
    good.connect();
    await good.once("welcome");
    assert.equal(calls, 1);
    assert.ok(new URL(t2.urls[0]).searchParams.get("token").split(".").length === 3);
    t2.drop();
    await until(() => ev2.of("welcome").length === 2, "the reconnect's welcome");
    assert.equal(calls, 2, "a fresh token for the reconnect");
  });
});

describe("messages", () => {
  test("a push via send_to_client arrives as a message event with data, messageId and pos", T, async () => {
    const sys = await node.register();
    const c = client({ systemId: sys.id });
    const ev = record(c);
    const { clientId } = await c.connect().once("welcome");
    const data = { n: 1, big: 18446744073709551615n.toString(), nested: [1, "two", null] };
    const messageId = await sys.send("send_to_client", { clientId, msg: "hello", sendUserId: "u1", code: 7, data });
    const m = await until(() => messages(ev)[0], "the push");
    assert.equal(m.messageId, messageId);
    assert.deepEqual(m.data, data);
    assert.equal(m.msg, "hello");
    assert.equal(m.sendUserId, "u1");
    assert.equal(m.code, 7);
    assert.equal(m.recovered, false);
    assert.equal(m.groupName, null);
    assert.equal(typeof m.pos, "string");
    assert.equal(c.resumeState.pos, m.pos);
    assert.equal(m.frame.messageId, messageId);
    const raw = ev.of("raw").find((r) => r.frame?.messageId === messageId);
    assert.ok(raw && JSON.parse(raw.data).messageId === messageId, "the raw event carries the frame text");
  });

  test("group and system sends, and presence frames of the group", T, async () => {
    const sys = await node.register();
    const a = client({ systemId: sys.id });
    const b = client({ systemId: sys.id });
    const evA = record(a);
    const idA = (await a.connect().once("welcome")).clientId;
    const idB = (await b.connect().once("welcome")).clientId;
    await sys.ok("bind_to_group", { clientId: idA, groupName: "room", userId: "ann" });
    await sys.ok("bind_to_group", { clientId: idB, groupName: "room", userId: "bob", extend: "{\"nick\":\"B\"}" });
    const joined = await until(() => evA.of("presence").find((p) => p.clientId === idB), "B's join");
    assert.deepEqual([joined.type, joined.groupName, joined.userId, joined.extend], ["joined", "room", "bob", "{\"nick\":\"B\"}"]);
    const g = await sys.send("send_to_group", { groupName: "room", data: "to the group" });
    const s = await sys.send("send_to_system", { data: 42 });
    await until(() => ids(evA).includes(s), "the system send");
    assert.deepEqual(ids(evA), [g, s], "presence frames are not message events");
    assert.equal(messages(evA)[0].groupName, "room");
    assert.equal(messages(evA)[1].data, 42);
    b.close();
    const left = await until(() => evA.of("presence").find((p) => p.type === "left"), "B's leave");
    assert.equal(left.clientId, idB);
  });

  test("autoAck acks every push (the trace shows acked); without it nothing is acked until ack()", T, async () => {
    const sys = await node.register();
    const auto = client({ systemId: sys.id, autoAck: true });
    const manual = client({ systemId: sys.id });
    const evAuto = record(auto);
    const evManual = record(manual);
    const idAuto = (await auto.connect().once("welcome")).clientId;
    const idManual = (await manual.connect().once("welcome")).clientId;
    const sent = [];
    for (let i = 0; i < 3; i++) sent.push(await sys.send("send_to_client", { clientId: idAuto, data: i }));
    for (const id of sent) {
      await until(async () => (await node.trace(id)).some((s) => s.step === "acked" && s.clientId === idAuto), `acked ${id}`);
    }
    assert.deepEqual(ids(evAuto), sent);
    const m = await sys.send("send_to_client", { clientId: idManual, data: "x" });
    await until(() => ids(evManual).includes(m), "the manual client's push");
    await sleep(300);
    assert.ok(!(await node.trace(m)).some((s) => s.step === "acked"), "not acked without autoAck");
    assert.equal(manual.ack(m), true);
    assert.equal(manual.ack(""), false);
    await until(async () => (await node.trace(m)).some((s) => s.step === "acked" && s.clientId === idManual), "acked by ack()");
  });

  test("pingInterval sends text ping (answered pong); a connection that answers nothing is dropped and replaced", T, async () => {
    const sys = await node.register();
    const t = await tracker();
    const c = client({ systemId: sys.id, pingInterval: 150, WebSocket: t.WebSocket });
    const ev = record(c);
    await c.connect().once("welcome");
    await until(() => ev.of("raw").filter((r) => r.data === "pong").length >= 2, "two pongs");
    assert.ok(t.sent.filter((d) => d === "ping").length >= 2);
    assert.equal(ev.of("raw").find((r) => r.data === "pong").frame, null);
    assert.equal(c.send("ping"), true, "send() writes raw frames");
    t.swallowPings = true; // the server hears nothing more, so answers nothing
    const closed = await until(() => ev.of("close")[0], "the drop", 3000);
    assert.deepEqual([closed.code, closed.reason, closed.willReconnect], [1006, "no answer to ping", true]);
    t.swallowPings = false;
    await until(() => ev.of("welcome").length === 2, "a new connection");
    assert.equal(c.state, "open");
  });
});

describe("reconnect and resume", () => {
  test("a dropped connection reconnects by itself, resumes, gets the gap's messages once, in order, marked recovered, then live ones", T, async () => {
    const sys = await node.register();
    const t = await tracker();
    const c = client({ systemId: sys.id, WebSocket: t.WebSocket });
    const ev = record(c);
    const first = await c.connect().once("welcome");
    await sys.ok("bind_to_group", { clientId: first.clientId, groupName: "g" });
    await until(() => ev.of("session").length >= 2, "the session frame after the bind");

    const before = [
      await sys.send("send_to_client", { clientId: first.clientId, data: "b0" }),
      await sys.send("send_to_group", { groupName: "g", data: "b1" }),
      await sys.send("send_to_system", { data: "b2" }),
    ];
    await until(() => ids(ev).length === 3, "the 3 live pushes");
    const lastPos = messages(ev)[2].pos;
    const session = c.resumeState.session;

    // The connection is lost, and the node stays unreachable while the gap's messages are sent.
    t.reachable = false;
    t.drop();
    const closed = await c.once("close");
    assert.equal(closed.willReconnect, true);
    await until(async () => (await sys.ok("client_status", { clientId: first.clientId })).online === false, "the node noticing");
    const gap = [];
    for (let i = 0; i < 4; i++) {
      gap.push(await sys.send(i % 2 ? "send_to_system" : "send_to_group", { groupName: "g", data: `gap${i}` }));
    }
    await until(() => t.urls.length >= 3, "failed attempts meanwhile");
    assert.equal(c.state, "reconnecting");
    assert.deepEqual(ev.of("welcome").length, 1);

    t.reachable = true;
    const resumed = await c.once("resumed");
    assert.equal(resumed.recovered, gap.length);
    const w = ev.of("welcome")[1];
    assert.deepEqual([w.resumed, w.recovered, w.reason], [true, 4, null]);
    assert.notEqual(w.clientId, first.clientId);
    assert.equal(c.clientId, w.clientId);
    const url = new URL(t.urls.at(-1));
    assert.equal(url.searchParams.get("since"), lastPos, "since is the pos of the last push read");
    assert.equal(url.searchParams.get("resume"), session, "resume is the latest session token");
    await until(() => ids(ev).length === 7, "the recovered pushes");

    const live = [
      await sys.send("send_to_client", { clientId: w.clientId, data: "a0" }),
      await sys.send("send_to_group", { groupName: "g", data: "a1" }), // the group came back
    ];
    await until(() => ids(ev).length === 9, "the live pushes after the resume");
    await sleep(200);
    const got = messages(ev);
    assert.deepEqual(got.map((m) => m.messageId), [...before, ...gap, ...live], "each once, in order");
    assert.deepEqual(got.map((m) => m.recovered), [false, false, false, true, true, true, true, false, false]);
    assert.deepEqual(got.slice(3, 7).map((m) => m.data), ["gap0", "gap1", "gap2", "gap3"]);
    assert.deepEqual(ev.of("resumeFailed"), []);
    assert.deepEqual(ev.of("state").map((s) => s.state), ["connecting", "open", "reconnecting", "open"]);
  });

  test("a bad session token: resumeFailed with the server's reason, and a fresh connection", T, async () => {
    const sys = await node.register();
    const a = client({ systemId: sys.id });
    const { clientId } = await a.connect().once("welcome");
    const evA = record(a);
    await sys.send("send_to_client", { clientId, data: 1 });
    const pos = (await until(() => messages(evA)[0], "a push")).pos;
    a.close();

    const b = client({ systemId: sys.id, resumeFrom: { session: "not-a-token", pos } });
    const ev = record(b);
    b.connect();
    const failed = await b.once("resumeFailed");
    assert.equal(failed.reason, "bad token");
    const w = ev.of("welcome")[0];
    assert.deepEqual([w.resumed, w.reason], [false, "bad token"]);
    assert.equal(failed.clientId, w.clientId);
    assert.equal(b.state, "open");
    assert.deepEqual(ev.of("resumed"), []);
    // A fresh connection forgets the old session and position; its own session frame gives new ones.
    await until(() => b.resumeState, "the new session");
    assert.notEqual(b.resumeState.session, "not-a-token");
    assert.notEqual(b.resumeState.pos, pos);
  });

  test("a drop before any push was read resumes from the session frame's pos", T, async () => {
    const sys = await node.register();
    const t = await tracker();
    const c = client({ systemId: sys.id, WebSocket: t.WebSocket });
    const ev = record(c);
    const first = await c.connect().once("welcome");
    await sys.ok("bind_to_group", { clientId: first.clientId, groupName: "quiet" });
    await until(() => ev.of("session").length >= 2, "the session frame after the bind");
    assert.ok(c.resumeState?.pos, "a session frame gives a position before any push");
    assert.equal(c.resumeState.pos, ev.of("session").at(-1).pos);
    t.reachable = false;
    t.drop();
    await c.once("close");
    await until(async () => (await sys.ok("client_status", { clientId: first.clientId })).online === false, "the node noticing");
    const missed = await sys.send("send_to_group", { groupName: "quiet", data: "while away" });
    t.reachable = true;
    const resumed = await c.once("resumed");
    assert.equal(resumed.recovered, 1);
    assert.equal(new URL(t.urls.at(-1)).searchParams.get("since"), ev.of("session")[1].pos);
    await until(() => messages(ev).length === 1, "the recovered push");
    assert.deepEqual([messages(ev)[0].messageId, messages(ev)[0].recovered], [missed, true]);
  });

  test("close() stops reconnecting, also in the middle of a backoff", T, async () => {
    const sys = await node.register();
    const t = await tracker();
    const c = client({ systemId: sys.id, WebSocket: t.WebSocket });
    const ev = record(c);
    const { clientId } = await c.connect().once("welcome");
    c.close();
    assert.equal(c.state, "closed");
    assert.deepEqual(ev.of("close").map((e) => e.willReconnect), [false]);
    await until(async () => (await sys.ok("client_status", { clientId })).online === false, "the node seeing the close");
    await sleep(500);
    assert.equal(t.urls.length, 1, "no reconnect after close()");

    // close() while the reconnect's timer is pending (set right after the close event).
    const t2 = await tracker();
    const d = client({ systemId: sys.id, WebSocket: t2.WebSocket, reconnect: { initialDelay: 300, maxDelay: 300 } });
    await d.connect().once("welcome");
    d.on("close", (e) => e.willReconnect && queueMicrotask(() => d.close()));
    t2.drop();
    await until(() => d.state === "closed", "the close() in the backoff");
    await sleep(700);
    assert.equal(t2.urls.length, 1, "no attempt after close()");
  });

  test("closed by the business system (close_client, 1000): no reconnect", T, async () => {
    const sys = await node.register();
    const t = await tracker();
    const c = client({ systemId: sys.id, WebSocket: t.WebSocket });
    const ev = record(c);
    const { clientId } = await c.connect().once("welcome");
    await sys.ok("close_client", { clientId });
    const closed = await until(() => ev.of("close")[0], "the close");
    assert.deepEqual([closed.code, closed.reason, closed.willReconnect], [1000, "closed by the business system", false]);
    await sleep(500);
    assert.equal(c.state, "closed");
    assert.equal(t.urls.length, 1);
  });

  test("reconnect attempts back off: each wait stays under its doubling ceiling (reconnect options honoured)", T, async () => {
    const sys = await node.register();
    const t = await tracker();
    const c = client({ systemId: sys.id, WebSocket: t.WebSocket, reconnect: { initialDelay: 100, maxDelay: 400 } });
    await c.connect().once("welcome");
    t.reachable = false;
    t.drop();
    await until(() => t.urls.length >= 8, "7 failed attempts", 8000);
    c.close();
    // Attempt k (0 first) waits under min(400, 100 * 2^k) ms, plus the time a refused connection
    // takes; waits[k] is the wait before attempt k + 1 (attempt 0 follows the drop).
    const waits = t.times.slice(1).map((at, i) => at - t.times[i]).slice(1);
    waits.forEach((w, k) => assert.ok(w < Math.min(400, 100 * 2 ** (k + 1)) + 150, `wait ${k} was ${w} ms: ${waits}`));
    assert.ok(new Set(waits).size > 1, `jittered: ${waits}`);
  });
});

describe("unit: backoff, final closes, acks, stale sockets", () => {
  test("backoffDelay: full jitter under a ceiling doubling from initialDelay to maxDelay", T, () => {
    const top = () => 0.999999;
    assert.deepEqual([0, 1, 2, 3, 4, 5, 6, 7].map((a) => backoffDelay(a, {}, top)), [499, 999, 1999, 3999, 7999, 15999, 29999, 29999]);
    assert.equal(backoffDelay(0, {}, () => 0), 0);
    assert.equal(backoffDelay(2000, {}, top), 29999, "no overflow for huge attempts");
    assert.deepEqual([0, 1, 2, 3].map((a) => backoffDelay(a, { initialDelay: 100, maxDelay: 250 }, top)), [99, 199, 249, 249]);
    const samples = Array.from({ length: 400 }, () => backoffDelay(4));
    assert.ok(samples.every((d) => d >= 0 && d < 8000 && Number.isInteger(d)));
    assert.ok(new Set(samples).size > 100, "jittered, not one value");
    const mean = samples.reduce((a, b) => a + b, 0) / samples.length;
    assert.ok(mean > 3000 && mean < 5000, `uniform over [0, 8000): mean ${mean}`);
  });

  test("isFinalClose: refusals and close_client are final; drops, shutdowns, idle timeouts and try-again are not", T, () => {
    assert.equal(isFinalClose(1008, "unknown system"), true);
    assert.equal(isFinalClose(1008, "unauthorized"), true);
    assert.equal(isFinalClose(1000, "closed by the business system"), true);
    for (const [code, reason] of [[1000, "idle timeout"], [1001, "server is shutting down"], [1006, ""], [1008, "too many frames"],
      [1012, "node re-joined the cluster; reconnect"], [1013, "client is too slow to keep up"], [1013, "node holds no slot yet; try again later"]]) {
      assert.equal(isFinalClose(code, reason), false, `${code} ${reason}`);
    }
  });

  test("herald.d.ts declares exactly what herald.js exports, its methods and the events it emits", T, () => {
    const dts = readFileSync(new URL("../../clients/herald.d.ts", import.meta.url), "utf8");
    const js = readFileSync(new URL("../../clients/herald.js", import.meta.url), "utf8");
    const declared = [...dts.matchAll(/^export declare (?:const|function|class) (\w+)/gm)].map((m) => m[1]).sort();
    assert.deepEqual(declared, Object.keys(herald).sort());
    const map = dts.slice(dts.indexOf("interface HeraldEventMap"), dts.indexOf("export type HeraldEventName"));
    const events = [...map.matchAll(/^  (\w+): \{/gm)].map((m) => m[1]).sort();
    const emitted = [...new Set([...js.matchAll(/#emit\("(\w+)"/g)].map((m) => m[1]))].sort();
    assert.deepEqual(events, emitted);
    const cls = dts.slice(dts.indexOf("export declare class HeraldClient"));
    const members = [...new Set([...cls.matchAll(/^  (?:readonly )?(\w+)[<(:]/gm)].map((m) => m[1]))]
      .filter((n) => !["constructor", "addEventListener", "removeEventListener"].includes(n)).sort();
    const proto = Object.getOwnPropertyNames(HeraldClient.prototype).filter((n) => n !== "constructor").sort();
    assert.deepEqual(members, proto);
  });

  /** A WebSocket stand-in the test feeds frames to. */
  function fakeSockets() {
    const all = [];
    class FakeWebSocket {
      constructor(url) { this.url = url; this.readyState = 0; this.sent = []; all.push(this); }
      accept(clientId = "c1") { this.readyState = 1; this.onopen?.({}); this.receive({ code: 0, data: { clientId }, msg: "success" }); }
      receive(frame) { this.onmessage?.({ data: typeof frame === "string" ? frame : JSON.stringify(frame) }); }
      send(data) { this.sent.push({ data, at: Date.now() }); }
      close(code = 1000, reason = "") { this.readyState = 3; this.onclose?.({ code, reason, wasClean: true }); }
    }
    return { all, FakeWebSocket };
  }
  const push = (i) => ({ code: 0, data: i, messageId: `m${i}`, msg: "", pos: `p${i}`, sendUserId: "", ts: 1 });

  test("acks are paced under the server's frame rate, and only the latest 64 wait", T, async () => {
    const { all, FakeWebSocket } = fakeSockets();
    const c = client({ url: "ws://fake/ws", systemId: "s", autoAck: true, WebSocket: FakeWebSocket });
    c.connect();
    await until(() => all.length === 1, "a socket");
    all[0].accept();
    const start = Date.now();
    for (let i = 0; i < 300; i++) all[0].receive(push(i));
    const acks = () => all[0].sent.map((s) => JSON.parse(s.data).ack);
    const burst = acks().length;
    assert.ok(burst >= 50 && burst <= 52, `a burst of 50 at once, not ${burst}`);
    assert.deepEqual(acks().slice(0, 50), Array.from({ length: 50 }, (_, k) => `m${k}`));
    await until(() => acks().length === burst + 64, "the queued 64", 4000);
    await sleep(100);
    assert.equal(acks().length, burst + 64, "the older ones were dropped (too old for the server to record)");
    assert.deepEqual(acks().slice(-64), Array.from({ length: 64 }, (_, k) => `m${236 + k}`));
    const firstSecond = all[0].sent.filter((s) => s.at - start < 1000).length;
    assert.ok(firstSecond <= 102, `${firstSecond} frames in the first second (the server allows 100/s, bursts of 200)`);
    c.close();
  });

  test("a refusal frame makes the close final even when the close reason was lost (a proxy)", T, async () => {
    const { all, FakeWebSocket } = fakeSockets();
    const c = client({ url: "ws://fake/ws", systemId: "s", WebSocket: FakeWebSocket, reconnect: { initialDelay: 1, maxDelay: 1 } });
    const ev = record(c);
    c.connect();
    await until(() => all.length === 1, "a socket");
    all[0].readyState = 1;
    all[0].receive({ code: 4010, data: null, msg: "invalid or expired token" });
    all[0].close(1006, "");
    await sleep(100);
    assert.equal(all.length, 1, "no second attempt");
    assert.equal(c.state, "closed");
    assert.deepEqual(ev.of("close").map((e) => e.willReconnect), [false]);
    assert.deepEqual(ev.of("error").map((e) => [e.code, e.message]), [[4010, "invalid or expired token"]]);
  });

  test("frames of an abandoned socket never move the position", T, async () => {
    const { all, FakeWebSocket } = fakeSockets();
    const c = client({ url: "ws://fake/ws", systemId: "s", WebSocket: FakeWebSocket, reconnect: { initialDelay: 1, maxDelay: 1 } });
    const ev = record(c);
    c.connect();
    await until(() => all.length === 1, "a socket");
    all[0].accept("c1");
    all[0].receive({ code: 1003, data: { session: "tok1" }, msg: "session" });
    all[0].receive(push(1));
    const stale = all[0].onmessage;
    all[0].close(1006, "");
    await until(() => all.length === 2, "the reconnect");
    stale({ data: JSON.stringify(push(2)) }); // a late frame of the old socket
    assert.deepEqual(ids(ev), ["m1"]);
    assert.deepEqual(c.resumeState, { session: "tok1", pos: "p1" });
    const url = new URL(all[1].url);
    assert.deepEqual([url.searchParams.get("resume"), url.searchParams.get("since")], ["tok1", "p1"]);
    all[1].accept("c2");
    all[1].receive({ code: 0, data: { clientId: "ignored" }, msg: "success" }); // not first: not a welcome
    assert.equal(c.clientId, "c2");
    assert.deepEqual(ev.of("resumeFailed").map((f) => f.reason), ["not resumed"], "a server that ignores resume");
    c.close();
  });
});
