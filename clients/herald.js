// herald.js: the browser (and Node >= 20) client of Herald, a WebSocket push server
// wire-compatible with go-websocket. One file, no dependencies, no build step.
//
//   import { connect } from "https://push.example.com/herald.js";
//   const herald = connect("wss://push.example.com/ws", { systemId: "shop" });
//   herald.on("welcome", (w) => reportClientIdToMyBackend(w.clientId));
//   herald.on("message", (m) => render(m.data));
//   herald.on("resumeFailed", () => resyncFromMyBackend());
//
// It connects, reconnects with backoff, resumes (recovering what was pushed while it was away)
// and keeps the connection alive. The protocol is docs/websocket.md; this client is
// docs/client.md.

/** Backoff bounds, in milliseconds (full jitter: each wait is random in [0, ceiling)). */
export const DEFAULT_INITIAL_DELAY = 500;
export const DEFAULT_MAX_DELAY = 30000;

/**
 * How long to wait before reconnect attempt `attempt` (0 for the first): a random time in
 * [0, min(maxDelay, initialDelay * 2^attempt)) ("full jitter"), so that clients dropped
 * together by a node do not come back together.
 */
export function backoffDelay(attempt, { initialDelay = DEFAULT_INITIAL_DELAY, maxDelay = DEFAULT_MAX_DELAY } = {}, random = Math.random) {
  const ceiling = Math.min(maxDelay, initialDelay * 2 ** Math.min(Math.max(0, attempt), 52));
  return Math.floor(random() * ceiling);
}

/**
 * Whether a close means "do not come back": the connection was refused (unknown system, bad or
 * missing JWT: close 1008 after a -1001 or 4010 frame) or the business system closed the client
 * (/api/close_client). Every other close (1000 idle timeout, 1001 shutdown, 1006 dropped,
 * 1012 node re-joined, 1013 try again, ...) is worth a reconnect.
 */
export function isFinalClose(code, reason) {
  return (code === 1008 && (reason === "unknown system" || reason === "unauthorized")) ||
    (code === 1000 && reason === "closed by the business system");
}

// The server closes a client that sends more than 100 frames a second (1008 "too many frames"):
// acks are paced below that, and only the latest 64 wait (the server records an ack only for
// one of the last 64 pushes of the connection).
const ACK_RATE = 50;
const ACK_QUEUE = 64;

export class HeraldClient extends EventTarget {
  #o;                 // options, with defaults
  #state = "closed";  // connecting | open | reconnecting | closed
  #ws = null;         // the current socket; events of any other socket are ignored
  #gen = 0;           // bumped for every attempt, so a late token() result is dropped
  #first = false;     // true until the current socket's first frame (welcome or refusal)
  #refused = null;    // the refusal frame (-1001, 4010) of the current socket
  #heard = false;     // a frame arrived since the last ping
  #admitted = false;  // some connection was admitted since connect(): later ones should resume
  #resumeFrom = false; // options.resumeFrom was given: the first connect resumes too
  #resumeAsk = null;  // what the current attempt asked: { session, pos } or { reason } (why not)
  #attempt = 0;       // failed attempts since the last welcome
  #timers = {};       // retry, connect, ping, ack
  #clientId = null;
  #session = null;    // latest session token (1003 frame)
  #pos = null;        // pos of the latest push read on this session
  #acks = [];
  #ackTokens = ACK_RATE;
  #ackAt = 0;

  /** See herald.d.ts / docs/client.md for every option. */
  constructor(options = {}) {
    super();
    if (!options.url) throw new TypeError("HeraldClient: url is required");
    if (!options.systemId) throw new TypeError("HeraldClient: systemId is required");
    const r = options.reconnect === undefined ? true : options.reconnect;
    this.#o = {
      url: options.url,
      systemId: options.systemId,
      token: options.token,
      autoAck: options.autoAck === true,
      reconnect: r === false ? null : {
        initialDelay: r.initialDelay ?? DEFAULT_INITIAL_DELAY,
        maxDelay: r.maxDelay ?? DEFAULT_MAX_DELAY,
      },
      pingInterval: options.pingInterval ?? 25000,
      connectTimeout: options.connectTimeout ?? 15000,
      WebSocket: options.WebSocket ?? globalThis.WebSocket,
    };
    if (typeof this.#o.WebSocket !== "function") {
      throw new TypeError("HeraldClient: no WebSocket (Node 20 needs --experimental-websocket, or pass options.WebSocket)");
    }
    if (options.resumeFrom?.session && options.resumeFrom?.pos) {
      this.#session = options.resumeFrom.session;
      this.#pos = options.resumeFrom.pos;
      this.#resumeFrom = true;
    }
  }

  get state() { return this.#state; }
  /** The current connection's client ID (null before the first welcome). */
  get clientId() { return this.#clientId; }
  /** What a resume would use now: the latest session token and pos (null until both are known). */
  get resumeState() { return this.#session && this.#pos ? { session: this.#session, pos: this.#pos } : null; }

  /** Starts connecting (and keeps reconnecting until close()). Returns this. */
  connect() {
    if (this.#state !== "closed") return this;
    this.#attempt = 0;
    this.#open();
    return this;
  }

  /** Closes for good: no reconnect; the session and position are forgotten. */
  close(code = 1000, reason = "") {
    if (this.#state === "closed") return;
    const ws = this.#ws;
    this.#stopSocket();
    this.#clear("retry");
    this.#session = this.#pos = null;
    this.#admitted = this.#resumeFrom = false;
    if (ws) {
      try { ws.close(code, reason); } catch { ws.close(); }
      this.#emit("close", { code, reason, wasClean: true, willReconnect: false });
    }
    this.#setState("closed");
  }

  /** Sends a raw text frame (e.g. "ping"); false when no connection is open. */
  send(text) {
    if (!this.#ws || this.#ws.readyState !== 1) return false;
    this.#ws.send(text);
    return true;
  }

  /** Acknowledges a push (recorded in its /admin/trace); paced, see ACK_RATE. */
  ack(messageId) {
    if (typeof messageId !== "string" || messageId === "") return false;
    this.#acks.push(messageId);
    if (this.#acks.length > ACK_QUEUE) this.#acks.shift();
    this.#flushAcks();
    return true;
  }

  /** Calls fn(detail) on each `name` event; returns a function that removes it. */
  on(name, fn) {
    const listener = (e) => fn(e.detail);
    this.addEventListener(name, listener);
    return () => this.removeEventListener(name, listener);
  }

  /** The detail of the next `name` event. */
  once(name) {
    return new Promise((resolve) => this.addEventListener(name, (e) => resolve(e.detail), { once: true }));
  }

  // ---- connecting ----

  async #open() {
    const gen = ++this.#gen;
    this.#setState(this.#admitted ? "reconnecting" : "connecting");
    let token = this.#o.token;
    if (typeof token === "function") {
      try {
        token = await token();
      } catch (err) {
        if (gen !== this.#gen || this.#state === "closed") return;
        this.#emit("error", { message: `token(): ${err?.message ?? err}`, code: null, frame: null });
        return this.#retry();
      }
      if (gen !== this.#gen || this.#state === "closed") return;
    }
    const url = new URL(this.#o.url, globalThis.location?.href);
    if (url.protocol === "http:") url.protocol = "ws:";
    if (url.protocol === "https:") url.protocol = "wss:";
    url.searchParams.set("systemId", this.#o.systemId);
    if (token) url.searchParams.set("token", token);
    // Resume only with both a session token and a position (a push's pos or a session frame's):
    // the server answers a resume without `since` "bad position".
    this.#resumeAsk = null;
    if (this.#admitted || this.#resumeFrom) {
      if (this.#session && this.#pos) {
        url.searchParams.set("resume", this.#session);
        url.searchParams.set("since", this.#pos);
        this.#resumeAsk = { session: this.#session, pos: this.#pos };
      } else {
        this.#resumeAsk = { reason: this.#session ? "no position" : "no session" };
      }
    }

    let ws;
    try {
      ws = new this.#o.WebSocket(url.href);
    } catch (err) {
      this.#emit("error", { message: `WebSocket: ${err?.message ?? err}`, code: null, frame: null });
      return this.#retry();
    }
    this.#ws = ws;
    this.#first = true;
    this.#refused = null;
    // A node that accepts TCP but never admits (or a black hole) would hang us.
    this.#timers.connect = setTimeout(() => this.#drop("connect timeout"), this.#o.connectTimeout);
    ws.onopen = () => ws === this.#ws && this.#emit("open", { resuming: !!this.#resumeAsk?.session });
    ws.onerror = () => {
      if (ws !== this.#ws) return;
      this.#emit("error", { message: "WebSocket error", code: null, frame: null });
      // The close event should follow; Node 20's WebSocket omits it when the connection fails.
      setTimeout(() => ws === this.#ws && this.#drop("WebSocket error"), 100);
    };
    ws.onmessage = (e) => ws === this.#ws && this.#frame(e.data);
    ws.onclose = (e) => ws === this.#ws && this.#closed(e.code, e.reason, e.wasClean);
  }

  // The socket is gone (closed, or dropped by us): reconnect unless that is pointless.
  #closed(code, reason, wasClean) {
    this.#stopSocket();
    const final = !this.#o.reconnect || !!this.#refused || isFinalClose(code, reason);
    this.#emit("close", { code, reason, wasClean, willReconnect: !final });
    if (final) {
      this.#admitted = this.#resumeFrom = false;
      this.#setState("closed");
    } else {
      this.#retry();
    }
  }

  #retry() {
    if (!this.#o.reconnect) return this.#setState("closed");
    this.#setState(this.#admitted ? "reconnecting" : "connecting");
    const delay = backoffDelay(this.#attempt++, this.#o.reconnect);
    this.#timers.retry = setTimeout(() => this.#open(), delay);
  }

  // Abandons a socket that stopped answering: its close event would come late, if at all.
  #drop(why) {
    const ws = this.#ws;
    if (!ws) return;
    this.#stopSocket();
    try { ws.close(4000, why); } catch { /* already closing */ }
    this.#closed(1006, why, false);
  }

  #stopSocket() {
    const ws = this.#ws;
    if (ws) ws.onopen = ws.onerror = ws.onmessage = ws.onclose = null;
    this.#ws = null;
    this.#clear("connect");
    this.#clear("ping");
    this.#clear("ack");
    this.#acks = [];
  }

  // ---- frames ----

  #frame(text) {
    if (typeof text !== "string") return; // Herald sends text only
    this.#heard = true;
    let f = null;
    if (text !== "pong") {
      try { f = JSON.parse(text); } catch { /* not JSON: raw only */ }
    }
    this.#emit("raw", { data: text, frame: f });
    if (!f || typeof f !== "object") return;
    if (this.#first) {
      this.#first = false;
      if (f.code === 0 && f.data && typeof f.data.clientId === "string") return this.#welcome(f);
      // Refused (-1001 unknown system, 4010 unauthorized): the 1008 close follows.
      this.#refused = f;
      return this.#emit("error", { message: f.msg, code: f.code, frame: f });
    }
    if (typeof f.messageId === "string" && f.messageId !== "") return this.#push(f);
    if ((f.code === 1001 || f.code === 1002) && f.messageId === "") return this.#presence(f);
    if (f.code === 1003 && !("messageId" in f) && f.data && "session" in f.data) {
      this.#session = f.data.session ?? null;
      // Where the log stood when this session took effect: everything before this frame was
      // read, so it is a position to resume from until a push gives a newer one.
      if (typeof f.data.pos === "string" && f.data.pos !== "") this.#pos = f.data.pos;
      return this.#emit("session", { session: this.#session, pos: this.#pos });
    }
  }

  #welcome(f) {
    const d = f.data;
    const resumed = d.resumed === true;
    const ask = this.#resumeAsk;
    this.#clear("connect");
    this.#clientId = d.clientId;
    this.#attempt = 0;
    this.#admitted = true;
    this.#resumeFrom = false;
    // A fresh connection starts a new session: the old token and position mean nothing to it.
    // A resumed one keeps them until its own session frame and pushes replace them.
    if (!resumed) this.#session = this.#pos = null;
    this.#heard = true;
    if (this.#o.pingInterval > 0) {
      this.#timers.ping = setInterval(() => {
        if (!this.#heard) return this.#drop("no answer to ping");
        this.#heard = false;
        this.send("ping");
      }, this.#o.pingInterval);
    }
    this.#setState("open");
    // A server without resume (go-websocket) answers a plain welcome: not resumed either.
    const reason = resumed ? null : ask ? (d.reason ?? ask.reason ?? "not resumed") : (d.reason ?? null);
    this.#emit("welcome", { clientId: d.clientId, resumed, recovered: resumed ? d.recovered ?? 0 : 0, reason, frame: f });
    if (resumed) {
      this.#emit("resumed", { clientId: d.clientId, recovered: d.recovered ?? 0 });
    } else if (ask) {
      this.#emit("resumeFailed", { clientId: d.clientId, reason });
    }
  }

  #push(f) {
    // Frames of one connection come in order, and the frames of an abandoned socket never get
    // here: the latest push is the newest position.
    if (typeof f.pos === "string" && f.pos !== "") this.#pos = f.pos;
    this.#emit("message", {
      data: f.data, messageId: f.messageId, pos: f.pos ?? null, recovered: f.recovered === true,
      redelivered: f.redelivered === true, code: f.code, msg: f.msg, sendUserId: f.sendUserId,
      groupName: f.groupName ?? null, ts: f.ts, frame: f,
    });
    if (this.#o.autoAck) this.ack(f.messageId);
  }

  #presence(f) {
    let d = f.data;
    if (typeof d === "string") { try { d = JSON.parse(d); } catch { d = {}; } } // go-websocket sent a string
    d = d ?? {};
    this.#emit("presence", {
      type: f.code === 1001 ? "joined" : "left", groupName: f.groupName, clientId: d.clientId,
      userId: d.userId, extend: d.extend, ts: f.ts, frame: f,
    });
  }

  // ---- helpers ----

  #flushAcks() {
    const now = Date.now();
    this.#ackTokens = Math.min(ACK_RATE, this.#ackTokens + ((now - this.#ackAt) * ACK_RATE) / 1000);
    this.#ackAt = now;
    while (this.#acks.length && this.#ackTokens >= 1 && this.send(JSON.stringify({ ack: this.#acks[0] }))) {
      this.#acks.shift();
      this.#ackTokens -= 1;
    }
    if (this.#acks.length && !this.#timers.ack && this.#ws) {
      this.#timers.ack = setTimeout(() => { this.#timers.ack = null; this.#flushAcks(); }, 1000 / ACK_RATE);
    }
  }

  #clear(name) {
    clearTimeout(this.#timers[name]);
    clearInterval(this.#timers[name]);
    this.#timers[name] = null;
  }

  #setState(state) {
    if (state === this.#state) return;
    const previous = this.#state;
    this.#state = state;
    this.#emit("state", { state, previous });
  }

  #emit(name, detail) {
    this.dispatchEvent(new CustomEvent(name, { detail }));
  }
}

/** new HeraldClient({ ...options, url }).connect() */
export function connect(url, options = {}) {
  return new HeraldClient({ ...options, url }).connect();
}
