// The REST API of docs/protocol.md, with token storage and silent refresh.
//
// Tokens live in localStorage so every tab shares one session. Refresh tokens
// rotate, and presenting an already-used one revokes the whole family, so two
// tabs must never refresh with the same token: refreshes run under a Web Lock
// (where available) and a tab first checks whether another tab already rotated.

const STORAGE_KEY = 'parley.auth';
const LOCK_NAME = 'parley.refresh';
const REFRESH_MARGIN_MS = 60_000;

export class ApiError extends Error {
  /** An HTTP error in the API's shape: `status`, `code`, optional `retryAfter` (s) and `data`. */
  constructor(status, code, message, data = {}, retryAfter = null) {
    super(message || code);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.data = data;
    this.retryAfter = retryAfter;
  }
}

/** Thrown when the session is gone (refresh refused): the app shows the login page. */
export class AuthLost extends ApiError {
  constructor(message = 'Your session has ended. Please sign in again.') {
    super(401, 'session_ended', message);
    this.name = 'AuthLost';
  }
}

function loadTokens() {
  try {
    const value = JSON.parse(localStorage.getItem(STORAGE_KEY) || 'null');
    return value && value.access_token && value.refresh_token ? value : null;
  } catch {
    return null;
  }
}

function saveTokens(tokens) {
  if (tokens) localStorage.setItem(STORAGE_KEY, JSON.stringify(tokens));
  else localStorage.removeItem(STORAGE_KEY);
}

function tokensFrom(answer) {
  const ttl = Math.max(10, Number(answer.expires_in) || 900) * 1000;
  return {
    access_token: answer.access_token,
    refresh_token: answer.refresh_token,
    expires_at: Date.now() + ttl,
    ttl,
  };
}

async function errorFrom(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    /* not JSON */
  }
  const err = body?.error;
  const retry = Number(response.headers.get('Retry-After'));
  if (err && typeof err === 'object') {
    return new ApiError(response.status, err.code || 'error', err.message, err, retry || null);
  }
  // OAuth2 error bodies (RFC 6749 section 5.2) are allowed on the token endpoint.
  if (typeof err === 'string') {
    return new ApiError(response.status, err, body.error_description || err, body, retry || null);
  }
  const text = response.status === 429 ? 'Too many requests' : `HTTP ${response.status}`;
  return new ApiError(response.status, `http_${response.status}`, text, {}, retry || null);
}

export class Api {
  /**
   * @param {object} options
   * @param {string} options.base  API prefix, e.g. "/api/v1"
   * @param {(reason?: string) => void} options.onAuthLost  called once when the session ends (with why, when known)
   */
  constructor({ base = '/api/v1', onAuthLost = () => {} } = {}) {
    this.base = base.replace(/\/$/, '');
    this.onAuthLost = onAuthLost;
    this.tokens = loadTokens();
    this.refreshing = null;
    this.refreshTimer = null;
    /** Called with fresh tokens (a refresh here or in another tab). */
    this.onTokens = null;
    // Another tab rotated the tokens or logged out.
    window.addEventListener('storage', (event) => {
      if (event.key !== STORAGE_KEY) return;
      const next = loadTokens();
      if (!next && this.tokens) {
        this.tokens = null;
        this.onAuthLost();
      } else if (next) {
        this.tokens = next;
        this.scheduleRefresh();
        this.onTokens?.(next);
      }
    });
    this.scheduleRefresh();
  }

  get signedIn() {
    return Boolean(this.tokens);
  }

  // -- tokens --------------------------------------------------------------

  setTokens(tokens) {
    this.tokens = tokens;
    saveTokens(tokens);
    this.scheduleRefresh();
    if (tokens) this.onTokens?.(tokens);
  }

  scheduleRefresh() {
    clearTimeout(this.refreshTimer);
    if (!this.tokens) return;
    // Renew a minute before expiry, or a quarter of the lifetime for short ones.
    const margin = Math.min(REFRESH_MARGIN_MS, (this.tokens.ttl || 900_000) / 4);
    const wait = Math.max(5_000, this.tokens.expires_at - Date.now() - margin);
    this.refreshTimer = setTimeout(() => this.refresh().catch(() => {}), wait);
  }

  /** A valid access token, refreshed first if it is about to expire. */
  async accessToken() {
    if (!this.tokens) throw new AuthLost();
    if (this.tokens.expires_at - Date.now() < 5_000) await this.refresh();
    return this.tokens.access_token;
  }

  /** Rotate the tokens once, however many callers ask at the same time. */
  refresh() {
    if (!this.refreshing) {
      const used = this.tokens?.refresh_token;
      const run = () => this.refreshWith(used);
      const locked = navigator.locks?.request ? navigator.locks.request(LOCK_NAME, run) : run();
      this.refreshing = locked.finally(() => {
        this.refreshing = null;
      });
    }
    return this.refreshing;
  }

  async refreshWith(used) {
    const stored = loadTokens();
    if (!stored) {
      this.lose();
      throw new AuthLost();
    }
    if (stored.refresh_token !== used) {
      // Another tab rotated while we waited for the lock: use its tokens.
      this.tokens = stored;
      this.scheduleRefresh();
      return;
    }
    const response = await fetch(`${this.base}/auth/token`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: used }),
    });
    if (response.ok) {
      this.setTokens(tokensFrom(await response.json()));
      return;
    }
    const error = await errorFrom(response);
    if (response.status === 400 || response.status === 401 || error.code === 'account_deactivated') {
      this.lose(error.code === 'account_deactivated' ? 'An admin deactivated this account.' : undefined);
      throw new AuthLost();
    }
    throw error; // 429, 5xx: keep the session, try again later
  }

  lose(reason) {
    const had = Boolean(this.tokens);
    this.setTokens(null);
    if (had) this.onAuthLost(reason);
  }

  // -- requests ------------------------------------------------------------

  /**
   * One API call. `json` is sent as a JSON body; 401 triggers one refresh and
   * one retry. Resolves to the parsed JSON answer; rejects with ApiError.
   */
  async request(method, path, { json, auth = true, retry = true } = {}) {
    const headers = {};
    if (json !== undefined) headers['Content-Type'] = 'application/json';
    if (auth) headers.Authorization = `Bearer ${await this.accessToken()}`;
    let response;
    try {
      response = await fetch(`${this.base}${path}`, {
        method,
        headers,
        body: json === undefined ? undefined : JSON.stringify(json),
      });
    } catch {
      throw new ApiError(0, 'network', 'Cannot reach the server. Check your connection.');
    }
    if (response.status === 401 && auth && retry) {
      await this.refresh();
      return this.request(method, path, { json, auth, retry: false });
    }
    if (!response.ok) throw await errorFrom(response);
    if (response.status === 204) return {};
    return response.json();
  }

  get(path) {
    return this.request('GET', path);
  }

  // -- auth ----------------------------------------------------------------

  async login(username, password) {
    let response;
    try {
      response = await fetch(`${this.base}/auth/token`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: 'password', username, password }),
      });
    } catch {
      throw new ApiError(0, 'network', 'Cannot reach the server. Check your connection.');
    }
    if (!response.ok) throw await errorFrom(response);
    this.setTokens(tokensFrom(await response.json()));
  }

  register(username, password, displayName, invite) {
    const json = { username, password };
    if (displayName) json.display_name = displayName;
    if (invite) json.invite = invite;
    return this.request('POST', '/auth/register', { json, auth: false });
  }

  /** Revoke the refresh token (its family with it) and forget the tokens. */
  async logout() {
    const token = this.tokens?.refresh_token;
    this.setTokens(null);
    if (token) {
      await this.request('POST', '/auth/revoke', { json: { token }, auth: false }).catch(() => {});
    }
  }

  /** The registration mode: "open", "closed" or "invite". */
  async registrationMode() {
    return (await this.request('GET', '/auth/registration', { auth: false })).mode;
  }

  // -- users ---------------------------------------------------------------

  me() {
    return this.get('/users/me');
  }

  user(id) {
    return this.get(`/users/${encodeURIComponent(id)}`);
  }

  async findUser(username) {
    const answer = await this.get(`/users?username=${encodeURIComponent(username)}`);
    return answer.users?.[0] || null;
  }

  // -- rooms ---------------------------------------------------------------

  rooms() {
    return this.get('/rooms');
  }

  publicRooms() {
    return this.get('/rooms/public');
  }

  room(id) {
    return this.get(`/rooms/${encodeURIComponent(id)}`);
  }

  createRoom(name, visibility, topic) {
    return this.request('POST', '/rooms', { json: { name, visibility, topic } });
  }

  updateRoom(id, changes) {
    return this.request('PATCH', `/rooms/${encodeURIComponent(id)}`, { json: changes });
  }

  join(id) {
    return this.request('POST', `/rooms/${encodeURIComponent(id)}/join`);
  }

  leave(id) {
    return this.request('POST', `/rooms/${encodeURIComponent(id)}/leave`);
  }

  members(id) {
    return this.get(`/rooms/${encodeURIComponent(id)}/members`);
  }

  addMember(id, userId) {
    return this.request('POST', `/rooms/${encodeURIComponent(id)}/members`, {
      json: { user_id: userId },
    });
  }

  /** Kick a member, or with `ban` also keep them out (a ban works on non-members too). */
  removeMember(id, userId, { ban = false } = {}) {
    const query = ban ? '?ban=true' : '';
    return this.request('DELETE', `/rooms/${encodeURIComponent(id)}/members/${encodeURIComponent(userId)}${query}`);
  }

  openDm(userId) {
    return this.request('POST', '/dms', { json: { user_id: userId } });
  }

  /** The group direct room of the caller and `userIds` (2 to 9 others), as a set. */
  openGroupDm(userIds) {
    return this.request('POST', '/dms', { json: { user_ids: userIds } });
  }

  /** A thread: `{root, messages, has_more}`, replies ascending after `afterSeq`. */
  thread(roomId, messageId, { afterSeq = 0, limit = 100 } = {}) {
    const q = new URLSearchParams({ after_seq: String(afterSeq), limit: String(limit) });
    return this.get(`/rooms/${encodeURIComponent(roomId)}/messages/${encodeURIComponent(messageId)}/thread?${q}`);
  }

  // -- messages and events -------------------------------------------------

  messages(roomId, { beforeSeq, afterSeq, limit = 50 } = {}) {
    const q = new URLSearchParams({ limit: String(limit) });
    if (beforeSeq != null) q.set('before_seq', String(beforeSeq));
    if (afterSeq != null) q.set('after_seq', String(afterSeq));
    return this.get(`/rooms/${encodeURIComponent(roomId)}/messages?${q}`);
  }

  /** The current state of one message (there is no single-message GET: page by seq). */
  async message(roomId, seq) {
    const answer = await this.messages(roomId, { afterSeq: seq - 1, limit: 1 });
    const found = answer.messages?.[0];
    return found && found.seq === seq ? found : null;
  }

  /** One page of messages found in the caller's rooms, best first (`next_cursor`: more). */
  search({ q, roomId, cursor, limit = 20 }) {
    const query = new URLSearchParams({ q, limit: String(limit) });
    if (roomId) query.set('room_id', roomId);
    if (cursor) query.set('cursor', cursor);
    return this.get(`/search?${query}`);
  }

  events(roomId, afterSeq, limit = 200) {
    const q = new URLSearchParams({ after_seq: String(afterSeq), limit: String(limit) });
    return this.get(`/rooms/${encodeURIComponent(roomId)}/events?${q}`);
  }

  sendMessage(roomId, body, clientMsgId, threadRootId = null) {
    const json = { body, client_msg_id: clientMsgId };
    if (threadRootId) json.thread_root_id = threadRootId;
    return this.request('POST', `/rooms/${encodeURIComponent(roomId)}/messages`, { json });
  }

  editMessage(roomId, messageId, body, version) {
    const path = `/rooms/${encodeURIComponent(roomId)}/messages/${encodeURIComponent(messageId)}`;
    return this.request('PATCH', path, { json: { body, version } });
  }

  deleteMessage(roomId, messageId) {
    const path = `/rooms/${encodeURIComponent(roomId)}/messages/${encodeURIComponent(messageId)}`;
    return this.request('DELETE', path);
  }

  react(roomId, messageId, emoji, on) {
    const path =
      `/rooms/${encodeURIComponent(roomId)}/messages/${encodeURIComponent(messageId)}` +
      `/reactions/${encodeURIComponent(emoji)}`;
    return this.request(on ? 'PUT' : 'DELETE', path);
  }

  markRead(roomId, seq) {
    return this.request('PUT', `/rooms/${encodeURIComponent(roomId)}/read`, { json: { seq } });
  }

  // -- notifications ---------------------------------------------------------

  notifications({ before, limit = 30, unreadOnly = false } = {}) {
    const q = new URLSearchParams({ limit: String(limit) });
    if (before) q.set('before', before);
    if (unreadOnly) q.set('unread_only', 'true');
    return this.get(`/notifications?${q}`);
  }

  /** Mark these notification ids read (`null`: all of them); answers `{unread}`. */
  readNotifications(ids) {
    return this.request('POST', '/notifications/read', { json: ids ? { ids } : { all: true } });
  }

  notificationLevel(roomId) {
    return this.get(`/rooms/${encodeURIComponent(roomId)}/notifications`);
  }

  setNotificationLevel(roomId, level) {
    return this.request('PUT', `/rooms/${encodeURIComponent(roomId)}/notifications`, { json: { level } });
  }
}
