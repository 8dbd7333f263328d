// The WebSocket transport: connect, authenticate, resume, heartbeat, reconnect.
//
// Life of a connection (docs/protocol.md):
//   open -> {"type":"auth"} -> ready -> {"type":"resume", cursors} -> replay... ->
//   resumed -> live
// Any close (server restart, 1001/1012 going away, 1008/1013 slow consumer,
// network loss, a silent peer caught by the heartbeat) schedules a reconnect with
// exponential backoff and full jitter; the next `resume` fills what was missed.
// An expired token (close 4001, or an `unauthorized`-family error) refreshes the
// tokens first. Frames other than the handshake are handed to `onFrame`.

const BACKOFF_BASE_MS = 500;
const DRAIN_JITTER_MS = 250; // a drained node's clients reconnect within it
const BACKOFF_CAP_MS = 30_000;
const PING_INTERVAL_MS = 20_000;
const AUTH_ERRORS = new Set(['unauthorized', 'invalid_token', 'token_expired', 'session_ended']);

export const State = Object.freeze({
  IDLE: 'idle', // not started, or stopped
  CONNECTING: 'connecting', // socket opening / authenticating
  RESUMING: 'resuming', // ready received, replay in progress
  LIVE: 'live',
  WAITING: 'waiting', // closed, reconnect scheduled
});

export class Socket {
  /**
   * @param {object} o
   * @param {string} o.url  ws:// or wss:// URL of /api/v1/ws
   * @param {() => Promise<string>} o.token  a fresh access token
   * @param {() => Promise<void>} o.refresh  rotate the tokens (rejects when the session is gone)
   * @param {() => object} o.cursors  {room_id: last seq seen} for the resume frame
   * @param {(frame: object) => void} o.onFrame  every frame after the handshake (and ready/resumed)
   * @param {(state: string, info: object) => void} o.onState
   */
  constructor({ url, token, refresh, cursors, onFrame, onState }) {
    Object.assign(this, { url, token, refresh, cursors, onFrame, onStateChange: onState });
    this.ws = null;
    this.state = State.IDLE;
    this.attempts = 0;
    this.retryAt = 0;
    this.timer = null;
    this.pinger = null;
    this.lastHeard = 0;
    this.interval = PING_INTERVAL_MS;
    this.resumeId = null;
    this.needsRefresh = false;
    this.frameSeq = 0;
    this.wakeUp = () => {
      if (this.state === State.WAITING) this.connectNow();
    };
    window.addEventListener('online', this.wakeUp);
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible') this.wakeUp();
    });
  }

  get live() {
    return this.state === State.LIVE;
  }

  /** True once `ready` arrived on the current connection (sending is allowed). */
  get ready() {
    return this.state === State.LIVE || this.state === State.RESUMING;
  }

  start() {
    if (this.state !== State.IDLE) return;
    this.connect();
  }

  stop() {
    clearTimeout(this.timer);
    this.stopHeartbeat();
    const ws = this.ws;
    this.ws = null;
    this.setState(State.IDLE);
    if (ws) {
      detach(ws);
      ws.close(1000, 'bye');
    }
  }

  /** Reconnect immediately (the banner's "Retry now"). */
  connectNow() {
    clearTimeout(this.timer);
    if (this.state === State.WAITING) this.connect();
  }

  /** Send a frame if the connection is ready; returns whether it was sent. */
  send(frame) {
    if (!this.ws || !this.ready || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  /**
   * Hand the open connection a fresh access token (answered `auth.ok`), so the
   * server need not end it when the first token expires. Returns whether it was sent.
   */
  reauth(token) {
    if (!token) return false;
    return this.send({ type: 'auth', token, id: this.nextId('reauth') });
  }

  nextId(prefix) {
    this.frameSeq += 1;
    return `${prefix}-${this.frameSeq}`;
  }

  setState(state, info = {}) {
    this.state = state;
    this.onStateChange?.(state, info);
  }

  async connect() {
    clearTimeout(this.timer);
    this.setState(State.CONNECTING, { attempts: this.attempts });
    let token;
    try {
      if (this.needsRefresh) {
        this.needsRefresh = false;
        await this.refresh();
      }
      token = await this.token();
    } catch (err) {
      if (err?.name === 'AuthLost') {
        this.stop();
        return;
      }
      this.scheduleReconnect();
      return;
    }
    if (this.state !== State.CONNECTING) return; // stopped meanwhile
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      this.lastHeard = Date.now();
      ws.send(JSON.stringify({ type: 'auth', token, id: 'auth' }));
    };
    ws.onmessage = (event) => {
      if (ws !== this.ws) return;
      this.lastHeard = Date.now();
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (frame && typeof frame === 'object') this.handle(frame);
    };
    ws.onclose = (event) => {
      if (ws !== this.ws) return;
      this.closed(event.code, event.reason);
    };
    ws.onerror = () => {
      /* a close event follows */
    };
  }

  handle(frame) {
    switch (frame.type) {
      case 'ready': {
        this.attempts = 0;
        this.interval = Math.min(PING_INTERVAL_MS, frame.heartbeat_interval_ms || PING_INTERVAL_MS);
        this.startHeartbeat();
        this.setState(State.RESUMING);
        this.onFrame(frame);
        this.resumeId = this.nextId('resume');
        this.ws.send(JSON.stringify({ type: 'resume', id: this.resumeId, cursors: this.cursors() }));
        return;
      }
      case 'resumed':
        if (frame.id === this.resumeId) {
          this.resumeId = null;
          this.setState(State.LIVE);
        }
        this.onFrame(frame);
        return;
      case 'pong':
        return;
      case 'auth.ok':
        return;
      case 'error':
        // A server without re-authentication on an open socket: the connection
        // goes on with its first token, and reconnects with a fresh one.
        if (frame.code === 'already_authenticated') return;
        // The token expired or was refused: the next connection refreshes first.
        if (AUTH_ERRORS.has(frame.code)) this.needsRefresh = true;
        this.onFrame(frame);
        return;
      default:
        this.onFrame(frame);
    }
  }

  closed(code, reason) {
    this.stopHeartbeat();
    const ws = this.ws;
    this.ws = null;
    if (ws) detach(ws);
    if (this.state === State.IDLE) return;
    // 4001: the access token expired or was refused; refresh before reconnecting.
    if (code === 4001) this.needsRefresh = true;
    this.scheduleReconnect({ code, reason });
  }

  scheduleReconnect(info = {}) {
    // Full jitter (AWS architecture blog, "Exponential Backoff And Jitter"): spreads
    // a thousand clients reconnecting after a restart over the whole window. A node
    // that is draining (1012 service restart, 1001 going away) asks for a reconnect
    // now, to another node behind the load balancer: no backoff, a little jitter.
    const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** this.attempts);
    const moved = info.code === 1012 || info.code === 1001;
    const delay = moved
      ? Math.random() * DRAIN_JITTER_MS
      : this.needsRefresh && this.attempts === 0
        ? 0
        : 250 + Math.random() * ceiling;
    this.attempts += 1;
    this.retryAt = Date.now() + delay;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delay);
    this.setState(State.WAITING, { ...info, retryAt: this.retryAt, attempts: this.attempts });
  }

  startHeartbeat() {
    this.stopHeartbeat();
    this.pinger = setInterval(() => {
      const ws = this.ws;
      if (!ws) return;
      // Silent for two intervals plus slack: the connection is half-open. Don't wait
      // for a close handshake that will never complete.
      if (Date.now() - this.lastHeard > 2 * this.interval + 5_000) {
        this.ws = null;
        detach(ws);
        ws.close(4000, 'heartbeat timeout');
        this.closed(1006, 'heartbeat timeout');
        return;
      }
      if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: 'ping' }));
    }, this.interval);
  }

  stopHeartbeat() {
    clearInterval(this.pinger);
    this.pinger = null;
  }
}

function detach(ws) {
  ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
}
