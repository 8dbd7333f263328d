// The controller: keeps the store in step with the server and carries out the
// user's actions. The UI calls its methods; it never touches the DOM.
//
// Delivery (each room event shown once, none missing):
//   * every event carries (room_id, seq); seq runs 1, 2, 3... per room;
//   * `RoomState.seen` is the highest seq applied with nothing missing before it;
//     an event at or below it is a duplicate and dropped;
//   * an event beyond seen + 1 waits in the room's buffer while the gap is filled
//     from GET /rooms/{id}/events (not while a resume's replay is still running:
//     the server is sending the gap anyway, so that is checked after `resumed`);
//   * on every reconnect the socket resumes from the `seen` cursors.
// Sending: a message goes to the outbox (persisted in localStorage) and out as a
// `send` frame whose id is its client_msg_id; it is resent with the same id after
// a reconnect (the server stores it once) until its `ack` or its own
// `message.created` event arrives, whichever is first.

import { Socket, State } from './socket.js';
import { limiter, sleep, uid, utf8Length } from './util.js';

const TYPING_SEND_EVERY_MS = 3_000;
const TYPING_SHOW_MS = 5_000;
const SEND_TIMEOUT_MS = 30_000; // unacknowledged on a live connection: failed
const READ_DEBOUNCE_MS = 400;
const PAGE = 50;
const JUMP_PAGE = 200; // the API's largest page: a search result far back loads in fewer requests
export const MAX_BODY_BYTES = 16_384;

/** Send errors worth retrying by ourselves before telling the user. */
const TRANSIENT_SEND_ERRORS = new Set(['unavailable', 'draining', 'internal']);
const TRANSIENT_RETRIES = 6;

/** Send errors the user can do nothing about by retrying as is. */
const FINAL_SEND_ERRORS = {
  too_large: 'This message is too long.',
  empty_body: 'This message is empty.',
  invalid_input: 'The server refused this message.',
  forbidden: 'You cannot post in this room.',
  not_a_member: 'You are not a member of this room.',
  not_found: 'This room no longer exists.',
  banned: 'You are banned from this room.',
};

export class Client {
  /**
   * @param {object} o
   * @param {import('./api.js').Api} o.api
   * @param {import('./store.js').Store} o.store
   * @param {object} o.hooks  {toast(text, kind), announce(text), roomGone(r, reason), newMessage(r, m), messageDeleted(id), notification(n), ready()}
   */
  constructor({ api, store, hooks }) {
    this.api = api;
    this.store = store;
    this.hooks = hooks;
    this.socket = null;
    this.queue = limiter(4);
    this.userRequests = new Map();
    this.presenceWanted = new Set();
    this.presenceSent = new Set();
    this.presenceSupported = true;
    this.lastTyping = new Map();
    this.readTimers = new Map();
    this.resumedOnce = false;
    this.sweeper = null;
    this.reconcileTimer = null;
  }

  // -- start and stop --------------------------------------------------------

  async boot() {
    const me = await this.api.me();
    this.store.me = me;
    this.store.setUser(me);
    const { rooms } = await this.api.rooms();
    for (const room of rooms) this.store.putRoom(room);
    this.restoreOutbox();
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    this.socket = new Socket({
      url: `${scheme}://${location.host}${this.api.base}/ws`,
      token: () => this.api.accessToken(),
      refresh: () => this.api.refresh(),
      cursors: () => this.cursors(),
      onFrame: (frame) => this.onFrame(frame),
      onState: (state, info) => this.onSocketState(state, info),
    });
    this.socket.start();
    // A fresh access token extends the open connection's session too.
    this.api.onTokens = (tokens) => this.socket?.reauth(tokens.access_token);
    this.sweeper = setInterval(() => this.sweep(), 1_000);
    document.addEventListener('visibilitychange', this.onVisibility);
    for (const r of this.store.rooms.values()) this.enrich(r);
  }

  stop() {
    this.api.onTokens = null;
    this.socket?.stop();
    clearInterval(this.sweeper);
    clearTimeout(this.reconcileTimer);
    document.removeEventListener('visibilitychange', this.onVisibility);
  }

  onVisibility = () => {
    this.store.touch('presence'); // our own dot follows the page's visibility
    if (!this.presenceSupported || !this.socket?.ready) return;
    const status = document.visibilityState === 'visible' ? 'online' : 'idle';
    this.socket.send({ type: 'presence.set', id: this.socket.nextId('presence'), status });
  };

  cursors() {
    const cursors = {};
    for (const r of this.store.rooms.values()) cursors[r.id] = r.seen;
    return cursors;
  }

  onSocketState(state, info) {
    const conn = this.store.conn;
    conn.state = state;
    conn.info = info;
    if (state === State.LIVE) conn.everLive = true;
    this.store.touch('conn');
  }

  // -- frames ----------------------------------------------------------------

  onFrame(frame) {
    switch (frame.type) {
      case 'ready':
        this.onReady(frame);
        break;
      case 'resumed':
        this.onResumed();
        break;
      case 'event':
        if (frame.event) this.onEvent(frame.event);
        break;
      case 'ack':
        if (frame.message) this.store.confirm(frame.message);
        break;
      case 'error':
        this.onError(frame);
        break;
      case 'typing':
        this.onTyping(frame);
        break;
      case 'presence':
        this.store.setPresence(frame.user_id, frame.status, frame.last_active_at);
        break;
      case 'notification':
        if (frame.notification) this.hooks.notification?.(frame.notification);
        break;
      default:
        break; // pong, read.ok and frames this client does not know
    }
  }

  onReady(frame) {
    this.hooks.ready?.();
    const rooms = frame.rooms || {};
    let differs = false;
    for (const id of Object.keys(rooms)) if (!this.store.rooms.has(id)) differs = true;
    for (const id of this.store.rooms.keys()) if (!(id in rooms)) differs = true;
    if (differs) this.scheduleReconcile(0);
    for (const [id, head] of Object.entries(rooms)) {
      const r = this.store.rooms.get(id);
      if (r && head < r.seen) this.startOver(r, head);
    }
    // Subscriptions belong to the connection: renew them on the new one.
    this.presenceSent.clear();
    // Resend the outbox once the resume frame is out (it is sent right after this).
    queueMicrotask(() => {
      this.flushOutbox();
      this.subscribePresence([...this.presenceWanted]);
      this.onVisibility();
    });
  }

  onResumed() {
    for (const r of this.store.rooms.values()) if (r.buffer.size) this.scheduleGapFill(r, 0);
    // Unread counts and read cursors may have moved elsewhere (another tab,
    // another device) while we were away: the server's numbers win.
    if (this.resumedOnce) this.scheduleReconcile(0);
    this.resumedOnce = true;
  }

  /**
   * The server's log of a room is behind what we saw (restored from a backup, a
   * failover): start that room over from the server's state at `head`.
   */
  startOver(r, head) {
    r.seen = head;
    r.notices = [];
    r.buffer.clear();
    r.messages = [];
    r.byId.clear();
    r.loaded = false;
    r.hasMore = true;
    if (r.id === this.store.currentRoomId) this.openRoom(r.id).catch(() => {});
    this.store.touch(`room:${r.id}`);
  }

  onError(frame) {
    if (frame.code === 'cursor_ahead') {
      const r = this.store.rooms.get(frame.room_id);
      if (r && typeof frame.head === 'number') this.startOver(r, frame.head);
      return;
    }
    const id = typeof frame.id === 'string' ? frame.id : '';
    if (id.startsWith('presence')) {
      if (frame.code === 'unsupported' || frame.code === 'unknown_type') {
        this.presenceSupported = false;
      }
      return;
    }
    for (const r of this.store.rooms.values()) {
      const entry = r.pending.get(id);
      if (entry) {
        this.sendFailed(r, entry, frame);
        return;
      }
    }
  }

  onTyping(frame) {
    const r = this.store.rooms.get(frame.room_id);
    if (!r || frame.user_id === this.store.me.id) return;
    r.typing.set(frame.user_id, Date.now() + TYPING_SHOW_MS);
    this.ensureUser(frame.user_id);
    this.store.touch('typing');
  }

  /** Once a second: expire typing notices and sends that were never acknowledged. */
  sweep() {
    const now = Date.now();
    for (const r of this.store.rooms.values()) {
      for (const [user, until] of r.typing) {
        if (until < now) {
          r.typing.delete(user);
          this.store.touch('typing');
        }
      }
      // Only time on a live connection counts: a message written offline waits
      // (as "waiting for the connection") and goes out when the socket is back.
      if (!this.socket?.live) continue;
      for (const entry of r.pending.values()) {
        if (entry.state === 'pending' && entry.sentAt && now - entry.sentAt > SEND_TIMEOUT_MS) {
          this.store.updatePending(r.id, entry.client_msg_id, {
            state: 'failed',
            error: 'The server did not confirm it.',
          });
        }
      }
    }
  }

  // -- room events: dedupe, order, gaps -----------------------------------------

  onEvent(ev) {
    let r = this.store.rooms.get(ev.room_id);
    if (!r) {
      if (ev.type !== 'member.joined' || ev.user_id !== this.store.me.id) {
        this.scheduleReconcile(1_000);
        return;
      }
      // A room we were just added to (joined here, in another tab, or a new DM).
      r = this.store.putRoom(
        { id: ev.room_id, name: '', kind: 'room', topic: '', last_seq: ev.seq - 1, unread: 0 },
        { seen: ev.seq - 1 },
      );
      r.readSeq = ev.seq;
      r.placeholder = true;
      this.fetchRoom(r);
    }
    if (ev.seq <= r.seen) return;
    if (ev.seq > r.seen + 1) {
      r.buffer.set(ev.seq, ev);
      this.scheduleGapFill(r);
      return;
    }
    this.apply(r, ev);
    while (r.buffer.has(r.seen + 1) && this.store.rooms.get(r.id) === r) {
      const next = r.buffer.get(r.seen + 1);
      r.buffer.delete(next.seq);
      this.apply(r, next);
    }
    for (const seq of r.buffer.keys()) if (seq <= r.seen) r.buffer.delete(seq);
    if (r.buffer.size) this.scheduleGapFill(r);
  }

  apply(r, ev) {
    const me = this.store.me.id;
    const effects = this.store.applyEvent(r, ev);
    if (ev.type === 'member.left' && ev.user_id === me) {
      this.store.removeRoom(r.id);
      this.hooks.roomGone?.(r, ev.reason || 'left');
      return;
    }
    if (ev.type === 'member.joined') {
      this.ensureUser(ev.user_id);
      if (r.id === this.store.currentRoomId) this.subscribePresence([ev.user_id]);
    }
    if (effects.created) {
      this.ensureUser(effects.created.sender_id);
      if (effects.created.sender_id !== me) this.hooks.newMessage?.(r, effects.created);
    }
    if (ev.type === 'message.deleted' && ev.message) this.hooks.messageDeleted?.(ev.message.id);
  }

  scheduleGapFill(r, delay = 250) {
    if (this.socket?.state === State.RESUMING || r.filling) return; // see onResumed
    clearTimeout(r.gapTimer);
    r.gapTimer = setTimeout(() => this.fillGap(r), delay);
  }

  async fillGap(r) {
    if (!r.buffer.size || r.filling || this.store.rooms.get(r.id) !== r) return;
    r.filling = true;
    let retry = false;
    try {
      for (let pages = 0; r.buffer.size && pages < 50; pages++) {
        const target = Math.max(...r.buffer.keys());
        const { events, has_more: more } = await this.api.events(r.id, r.seen, 200);
        for (const ev of events) this.onEvent({ ...ev, room_id: r.id });
        if (!events.length || !more || r.seen >= target) break;
      }
      retry = r.buffer.size > 0;
    } catch {
      retry = true;
    } finally {
      r.filling = false;
    }
    if (retry && this.store.rooms.get(r.id) === r) this.scheduleGapFill(r, 2_000);
  }

  /** Bring the room list in line with GET /rooms (joins, leaves, unread counts). */
  scheduleReconcile(delay) {
    clearTimeout(this.reconcileTimer);
    this.reconcileTimer = setTimeout(() => this.reconcile().catch(() => {}), delay);
  }

  async reconcile() {
    const { rooms } = await this.api.rooms();
    const present = new Set();
    for (const room of rooms) {
      present.add(room.id);
      const known = this.store.rooms.get(room.id);
      const r = this.store.putRoom(room, { seen: room.last_seq });
      r.readSeq = Math.max(r.readSeq, room.read_seq);
      if (!(known && r.id === this.store.currentRoomId && r.readSeq > room.read_seq)) {
        r.unread = room.unread;
      }
      if (!known) this.enrich(r);
    }
    for (const r of [...this.store.rooms.values()]) {
      if (!present.has(r.id) && !r.placeholder) {
        this.store.removeRoom(r.id);
        this.hooks.roomGone?.(r, 'left');
      }
    }
    this.store.touch('rooms');
  }

  // -- rooms ---------------------------------------------------------------------

  async fetchRoom(r) {
    try {
      const room = await this.api.room(r.id);
      r.placeholder = false;
      this.store.putRoom({ ...room, last_seq: r.room.last_seq });
      this.enrich(r);
    } catch {
      r.placeholder = false;
    }
  }

  /** Fill in what GET /rooms lacks: a DM's other member, the last activity. */
  enrich(r) {
    if (r.isGroup && !r.groupUserIds) {
      this.queue(() => this.loadMembers(r)).catch(() => {});
    } else if (r.isGroup) {
      r.groupUserIds.forEach((id) => this.ensureUser(id));
    } else if (r.isDm && !r.dmUserId) {
      this.queue(() => this.loadMembers(r)).catch(() => {});
    } else if (r.isDm) {
      this.ensureUser(r.dmUserId);
      this.subscribePresence([r.dmUserId]);
    }
    if (!r.lastActivity) {
      this.queue(async () => {
        if (r.lastActivity || r.loaded) return;
        const { messages } = await this.api.messages(r.id, { limit: 1 });
        const last = messages[messages.length - 1];
        r.lastActivity = last?.created_at || r.room.created_at || null;
        if (last && !last.deleted) {
          r.preview = { sender_id: last.sender_id, text: last.body };
          this.ensureUser(last.sender_id);
        }
        this.store.touch('rooms');
      }).catch(() => {});
    }
  }

  async loadMembers(r) {
    const { members } = await this.api.members(r.id);
    r.members = new Map();
    for (const { user, role } of members) {
      this.store.setUser(user);
      r.members.set(user.id, role);
      if (r.isDm && user.id !== this.store.me.id) r.dmUserId = user.id;
    }
    if (r.isGroup) r.groupUserIds = [...r.members.keys()].filter((id) => id !== this.store.me.id);
    if (r.isDm) this.subscribePresence([r.dmUserId].filter(Boolean));
    this.store.touch(`members:${r.id}`, 'rooms', 'current');
    return r.members;
  }

  /** Make a room the open one: load its newest messages and members. */
  async openRoom(roomId) {
    const r = this.store.rooms.get(roomId);
    if (!r) return null;
    if (this.store.currentRoomId !== roomId) {
      this.store.currentRoomId = roomId;
      r.markerSeq = r.unread > 0 ? r.readSeq : null;
      this.store.touch('current', `room:${roomId}`, 'rooms');
    }
    const work = [];
    if (!r.loaded) {
      work.push(
        this.api.messages(roomId, { limit: PAGE }).then(({ messages, has_more: more }) => {
          r.setLatest(messages, more);
          for (const m of messages) this.ensureUser(m.sender_id);
          const last = r.lastMessage();
          if (last) r.lastActivity = last.created_at;
          this.store.touch(`room:${roomId}`);
        }),
      );
    }
    work.push(
      this.loadMembers(r).then((members) => this.subscribePresence([...members.keys()])),
    );
    await Promise.all(work);
    return r;
  }

  async loadOlder(r, limit = PAGE) {
    if (!r.loaded || !r.hasMore || r.loadingOlder) return;
    r.loadingOlder = true;
    this.store.touch(`room:${r.id}`);
    try {
      const beforeSeq = r.messages[0]?.seq;
      const { messages, has_more: more } = await this.api.messages(r.id, { beforeSeq, limit });
      r.addOlder(messages, more);
      for (const m of messages) this.ensureUser(m.sender_id);
    } finally {
      r.loadingOlder = false;
      this.store.touch(`room:${r.id}`);
    }
  }

  /** Load older pages of an open room until message `seq` is among them (a search
   * result's context; pages of the API's largest size); false if the room's history
   * does not reach it. */
  async loadUntil(r, seq) {
    while (r.loaded && r.messages.length && r.messages[0].seq > seq) {
      if (!r.hasMore) return false;
      if (r.loadingOlder) await sleep(50);
      else await this.loadOlder(r, JUMP_PAGE);
    }
    return r.loaded;
  }

  async createRoom(name, visibility, topic) {
    const room = await this.api.createRoom(name, visibility, topic);
    const r = this.store.putRoom({ ...room, role: 'owner' }, { seen: room.last_seq });
    r.readSeq = room.last_seq;
    r.lastActivity = room.created_at;
    return r;
  }

  async joinRoom(roomId) {
    const room = await this.api.join(roomId);
    const r = this.store.putRoom(room, { seen: room.last_seq });
    r.readSeq = Math.max(r.readSeq, room.last_seq);
    r.placeholder = false;
    this.enrich(r);
    return r;
  }

  async leaveRoom(r) {
    await this.api.leave(r.id);
    this.store.removeRoom(r.id);
  }

  /** Open (or find) the direct room with a user given by username. */
  async openDm(username) {
    const user = await this.api.findUser(username.trim().replace(/^@/, '').toLowerCase());
    if (!user) throw new Error(`There is no user named “${username}”.`);
    if (user.id === this.store.me.id) throw new Error('That is you: pick someone else.');
    this.store.setUser(user);
    const room = await this.api.openDm(user.id);
    const r = this.store.putRoom({ ...room, kind: 'dm' }, { seen: room.last_seq });
    r.dmUserId = user.id;
    if (!r.lastActivity) r.lastActivity = room.created_at;
    this.subscribePresence([user.id]);
    return r;
  }

  /** Open (or find) the group direct room with several users given by username. */
  async openGroupDm(usernames) {
    const names = [...new Set(usernames.map((u) => u.trim().replace(/^@/, '').toLowerCase()).filter(Boolean))];
    const users = [];
    for (const name of names) {
      const user = await this.api.findUser(name);
      if (!user) throw new Error(`There is no user named “${name}”.`);
      if (user.id === this.store.me.id) continue;
      this.store.setUser(user);
      users.push(user);
    }
    if (users.length < 2 || users.length > 9) throw new Error('A group message is for 2 to 9 other people.');
    const room = await this.api.openGroupDm(users.map((u) => u.id));
    const r = this.store.putRoom(room, { seen: room.last_seq });
    r.groupUserIds = users.map((u) => u.id);
    if (!r.lastActivity) r.lastActivity = room.created_at;
    this.subscribePresence(r.groupUserIds);
    return r;
  }

  // -- threads -------------------------------------------------------------------

  /** Load a thread (its root and every reply, a page at a time) into the room's state. */
  async loadThread(r, rootId) {
    let answer = await this.api.thread(r.id, rootId);
    const thread = { root: answer.root, replies: new Map(), loaded: false };
    r.threads.set(answer.root.id, thread);
    for (;;) {
      for (const m of answer.messages) {
        thread.replies.set(m.id, m);
        this.ensureUser(m.sender_id);
      }
      if (!answer.has_more || !answer.messages.length) break;
      const after = answer.messages[answer.messages.length - 1].seq;
      answer = await this.api.thread(r.id, rootId, { afterSeq: after });
    }
    thread.loaded = true;
    this.ensureUser(thread.root.sender_id);
    this.store.touch(`thread:${thread.root.id}`);
    return thread;
  }

  /** Reply in a thread (over REST: the answer is the stored reply). */
  async reply(r, rootId, body) {
    if (!body.trim()) throw new Error('Type a reply first.');
    const size = utf8Length(body);
    if (size > MAX_BODY_BYTES) throw new Error(`This reply is ${size.toLocaleString()} bytes; the limit is ${MAX_BODY_BYTES.toLocaleString()}.`);
    const message = await this.api.sendMessage(r.id, body, uid(), rootId);
    this.store.confirm(message);
    if (r.noteThreadMessage(message)) this.store.touch(`thread:${rootId}`);
    return message;
  }

  async addMember(r, username) {
    const user = await this.api.findUser(username.trim().replace(/^@/, '').toLowerCase());
    if (!user) throw new Error(`There is no user named “${username}”.`);
    this.store.setUser(user);
    await this.api.addMember(r.id, user.id);
    return user;
  }

  /** Change a room's name and/or topic (admins and owners). */
  async updateRoom(r, changes) {
    const room = await this.api.updateRoom(r.id, changes);
    this.store.putRoom(room);
  }

  async removeMember(r, userId, { ban = false } = {}) {
    await this.api.removeMember(r.id, userId, { ban });
  }

  // -- users and presence ------------------------------------------------------

  ensureUser(userId) {
    if (!userId || this.store.users.has(userId) || this.userRequests.has(userId)) return;
    const request = this.queue(() => this.api.user(userId))
      .then((user) => this.store.setUser(user))
      .catch((err) => {
        if (err?.status === 404) {
          this.store.setUser({ id: userId, username: 'unknown', display_name: 'Unknown user' });
        }
      })
      .finally(() => this.userRequests.delete(userId));
    this.userRequests.set(userId, request);
  }

  subscribePresence(userIds) {
    const me = this.store.me?.id;
    const fresh = userIds.filter((id) => id && id !== me && !this.presenceSent.has(id));
    for (const id of fresh) this.presenceWanted.add(id);
    if (!fresh.length || !this.presenceSupported || !this.socket?.ready) return;
    const sent = this.socket.send({
      type: 'presence.subscribe',
      id: this.socket.nextId('presence'),
      user_ids: fresh,
    });
    if (sent) for (const id of fresh) this.presenceSent.add(id);
  }

  // -- reading and typing --------------------------------------------------------

  /** The user has seen the room up to `seq` (the newest visible message, or all). */
  noteRead(r, seq) {
    if (seq <= r.readSeq) return;
    r.readSeq = seq;
    const me = this.store.me.id;
    r.unread = r.messages.filter((m) => m.seq > seq && !m.deleted && m.sender_id !== me).length;
    if (seq >= r.seen) r.unread = 0;
    this.store.touch('rooms');
    clearTimeout(this.readTimers.get(r.id));
    this.readTimers.set(
      r.id,
      setTimeout(() => {
        this.readTimers.delete(r.id);
        const frame = { type: 'read', room_id: r.id, seq: r.readSeq };
        if (!this.socket?.send(frame)) this.api.markRead(r.id, r.readSeq).catch(() => {});
      }, READ_DEBOUNCE_MS),
    );
  }

  typing(r) {
    const now = Date.now();
    if (now - (this.lastTyping.get(r.id) || 0) < TYPING_SEND_EVERY_MS) return;
    if (this.socket?.send({ type: 'typing', room_id: r.id })) this.lastTyping.set(r.id, now);
  }

  /** Names of the people typing in a room right now. */
  typers(r) {
    const now = Date.now();
    return [...r.typing].filter(([, until]) => until > now).map(([id]) => id);
  }

  // -- sending -------------------------------------------------------------------

  /** Queue a message; returns an error text if it cannot be sent at all. */
  send(r, body) {
    if (!body.trim()) return 'Type a message first.';
    const size = utf8Length(body);
    if (size > MAX_BODY_BYTES) {
      return `This message is ${size.toLocaleString()} bytes; the limit is ${MAX_BODY_BYTES.toLocaleString()}.`;
    }
    const entry = {
      room_id: r.id,
      client_msg_id: uid(),
      body,
      created_at: new Date().toISOString(),
      state: 'pending',
      queuedAt: Date.now(),
    };
    r.markerSeq = null;
    this.lastTyping.delete(r.id);
    this.store.addPending(r, entry);
    this.transmit(entry);
    return null;
  }

  transmit(entry) {
    clearTimeout(entry.retryTimer);
    const sent = this.socket?.send({
      type: 'send',
      id: entry.client_msg_id,
      room_id: entry.room_id,
      body: entry.body,
      client_msg_id: entry.client_msg_id,
    });
    // Not sent now (offline): flushOutbox sends it once the socket is ready.
    entry.sentAt = sent ? Date.now() : 0;
  }

  flushOutbox() {
    for (const entry of this.store.allPending()) {
      if (entry.state === 'pending') this.transmit(entry);
    }
  }

  sendFailed(r, entry, frame) {
    if (frame.code === 'rate_limited') {
      const wait = Math.max(1, Number(frame.retry_after) || 2) * 1000;
      entry.sentAt = 0;
      entry.retryTimer = setTimeout(() => this.transmit(entry), wait);
      return;
    }
    if (TRANSIENT_SEND_ERRORS.has(frame.code) && (entry.attempts || 0) < TRANSIENT_RETRIES) {
      // The server could not store it just now (database busy, node draining):
      // try again with backoff and the same client_msg_id (about 25 s in all).
      entry.attempts = (entry.attempts || 0) + 1;
      entry.sentAt = 0;
      const wait = Math.min(8_000, 500 * 2 ** entry.attempts) * (0.5 + Math.random() / 2);
      entry.retryTimer = setTimeout(() => this.transmit(entry), wait);
      return;
    }
    const text = FINAL_SEND_ERRORS[frame.code] || frame.message || 'The server could not store it.';
    this.store.updatePending(r.id, entry.client_msg_id, { state: 'failed', error: text });
  }

  retry(r, clientMsgId) {
    const entry = this.store.updatePending(r.id, clientMsgId, {
      state: 'pending',
      error: null,
      queuedAt: Date.now(),
      attempts: 0,
    });
    if (entry) this.transmit(entry);
  }

  discard(r, clientMsgId) {
    const entry = r.pending.get(clientMsgId);
    if (!entry) return;
    clearTimeout(entry.retryTimer);
    r.pending.delete(clientMsgId);
    this.store.saveOutbox();
    this.store.touch(`room:${r.id}`, 'rooms');
  }

  restoreOutbox() {
    for (const saved of this.store.loadOutbox()) {
      const r = this.store.rooms.get(saved.room_id);
      if (!r || !saved.client_msg_id || typeof saved.body !== 'string') continue;
      r.pending.set(saved.client_msg_id, {
        ...saved,
        state: saved.state === 'failed' ? 'failed' : 'pending',
        queuedAt: Date.now(),
      });
    }
    this.store.saveOutbox();
  }

  // -- editing, deleting, reacting -----------------------------------------------

  /**
   * Save an edit. Resolves {ok: true}, or {conflict: Message|null} when someone
   * changed (or deleted) the message since `version`.
   */
  async edit(r, message, body, version) {
    const size = utf8Length(body);
    if (size > MAX_BODY_BYTES) throw new Error(`Too long: ${size} of ${MAX_BODY_BYTES} bytes.`);
    try {
      const updated = await this.api.editMessage(r.id, message.id, body, version);
      r.upsert(updated);
      this.store.touch(`room:${r.id}`);
      return { ok: true };
    } catch (err) {
      if (err?.status !== 409) throw err;
      const current = await this.api.message(r.id, message.seq).catch(() => null);
      if (current) r.upsert(current);
      this.store.touch(`room:${r.id}`);
      return { conflict: current };
    }
  }

  async remove(r, message) {
    const tombstone = await this.api.deleteMessage(r.id, message.id);
    if (tombstone?.id) r.upsert(tombstone);
    this.store.touch(`room:${r.id}`, 'rooms');
  }

  async react(r, message, emoji) {
    const mine = (message.reactions?.[emoji] || []).includes(this.store.me.id);
    const updated = await this.api.react(r.id, message.id, emoji, !mine);
    if (updated?.id) r.upsert(updated);
    this.store.touch(`room:${r.id}`);
  }
}
