// Type declarations of herald.js (docs/client.md). Kept by hand: change both together.

/** Backoff bounds, in milliseconds. */
export declare const DEFAULT_INITIAL_DELAY: 500;
export declare const DEFAULT_MAX_DELAY: 30000;

export interface BackoffOptions {
  /** Ceiling of the first wait, doubled on each failed attempt. Default 500. */
  initialDelay?: number;
  /** Largest ceiling. Default 30000. */
  maxDelay?: number;
}

/** A random wait in [0, min(maxDelay, initialDelay * 2^attempt)) ("full jitter"). */
export declare function backoffDelay(attempt: number, options?: BackoffOptions, random?: () => number): number;

/** True for the closes after which reconnecting is pointless (refused; closed by the business system). */
export declare function isFinalClose(code: number, reason: string): boolean;

/** What a resume needs: the latest session token (1003 frame) and the latest pos read (a push's or a session frame's). */
export interface ResumeState {
  session: string;
  pos: string;
}

/** The subset of the WebSocket constructor herald.js uses. */
export type WebSocketConstructor = new (url: string) => WebSocket;

export interface HeraldOptions {
  /** The node's (or balancer's) WebSocket URL, e.g. "wss://push.example.com/ws"; http(s) and relative URLs work too. */
  url: string;
  /** The registered business system. */
  systemId: string;
  /** A JWT for systems with client auth; a function is called before every attempt (a fresh token after a long outage). */
  token?: string | (() => string | Promise<string>);
  /** Acknowledge every push with {"ack": messageId} (paced to 50 a second). Default false. */
  autoAck?: boolean;
  /** Reconnect with exponential backoff and full jitter (default true: 500 ms doubling to 30 s); false never reconnects. */
  reconnect?: boolean | BackoffOptions;
  /** Milliseconds between text "ping" frames; a connection that answers nothing for a whole interval is dropped. 0 is off. Default 25000. */
  pingInterval?: number;
  /** Milliseconds an attempt may take to get its welcome before it is dropped. Default 15000. */
  connectTimeout?: number;
  /** Resume this session on the first connect (e.g. saved from resumeState before a page reload). */
  resumeFrom?: ResumeState;
  /** WebSocket implementation. Default globalThis.WebSocket. */
  WebSocket?: WebSocketConstructor;
}

export type HeraldState = "connecting" | "open" | "reconnecting" | "closed";

/** Any frame, parsed (null for "pong" and for text that is not JSON). */
export type Frame = { [key: string]: unknown };

export interface HeraldEventMap {
  /** The socket opened (the welcome or a refusal follows). */
  open: { resuming: boolean };
  /** Admitted. `reason` is why a resume was not granted (null when none was asked). */
  welcome: { clientId: string; resumed: boolean; recovered: number; reason: string | null; frame: Frame };
  /** The resume was granted: `recovered` pushes follow as message events with recovered: true. */
  resumed: { clientId: string; recovered: number };
  /**
   * This connection is a fresh one: what was pushed while away is lost and the old groups are
   * gone. Resync from your business system (and hand it the new clientId). `reason` is the
   * server's ("window exceeded", "too many messages", "messages no longer kept", "bad token",
   * "bad position", "the log's layout changed": docs/websocket.md) or this client's ("no position":
   * no push or session frame with a pos was read before the drop; "no session": no session token; "not resumed": the server
   * ignored the resume).
   */
  resumeFailed: { clientId: string; reason: string };
  /** A push. `data` is the business system's JSON value; `pos` its opaque log position. */
  message: {
    data: unknown;
    messageId: string;
    pos: string | null;
    recovered: boolean;
    redelivered: boolean;
    code: number;
    msg: string;
    sendUserId: string;
    groupName: string | null;
    ts: number;
    frame: Frame;
  };
  /** 1001 (joined) and 1002 (left) frames of the groups this client is in. */
  presence: {
    type: "joined" | "left";
    groupName: string;
    clientId: string;
    userId: string;
    extend: string;
    ts: number;
    frame: Frame;
  };
  /** A new session token (1003 frame); null when too large to carry (the client cannot resume). */
  session: { session: string | null; pos: string | null };
  state: { state: HeraldState; previous: HeraldState };
  /** A socket closed. willReconnect is false after close(), a refusal or a final close. */
  close: { code: number; reason: string; wasClean: boolean; willReconnect: boolean };
  /** A refusal frame (code -1001 or 4010, frame set), a socket error or a failing token(). */
  error: { message: string; code: number | null; frame: Frame | null };
  /** Every text frame as received, "pong" included, and its parse. */
  raw: { data: string; frame: Frame | null };
}

export type HeraldEventName = keyof HeraldEventMap;

export declare class HeraldClient extends EventTarget {
  constructor(options: HeraldOptions);
  readonly state: HeraldState;
  /** The current connection's client ID (null before the first welcome). */
  readonly clientId: string | null;
  /** The latest session token and pos, or null until both are known. */
  readonly resumeState: ResumeState | null;
  /** Starts connecting (and reconnecting until close()). */
  connect(): this;
  /** Closes for good; forgets the session. */
  close(code?: number, reason?: string): void;
  /** Sends a raw text frame; false when no connection is open. */
  send(text: string): boolean;
  /** Acknowledges a push; false for an empty id. */
  ack(messageId: string): boolean;
  /** Calls fn with each event's detail; returns a function that removes it. */
  on<K extends HeraldEventName>(name: K, fn: (detail: HeraldEventMap[K]) => void): () => void;
  /** The detail of the next such event. */
  once<K extends HeraldEventName>(name: K): Promise<HeraldEventMap[K]>;
  addEventListener<K extends HeraldEventName>(
    type: K,
    listener: (event: CustomEvent<HeraldEventMap[K]>) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
  removeEventListener<K extends HeraldEventName>(
    type: K,
    listener: (event: CustomEvent<HeraldEventMap[K]>) => void,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | EventListenerOptions): void;
}

/** new HeraldClient({ ...options, url }).connect() */
export declare function connect(url: string, options: Omit<HeraldOptions, "url">): HeraldClient;
