// Client state: rooms, messages, users, presence, typing, the outbox.
//
// The store changes only through its methods, which mark "topics" dirty; the UI
// subscribes and re-renders once per frame for the topics that changed:
//   'rooms' (sidebar), 'room:<id>' (that room's messages), 'members:<id>',
//   'users', 'presence', 'typing', 'conn', 'current'.
//
// Room event application is idempotent per event and ordered by `seq`; the
// controller (client.js) guarantees each event is applied once and in order.

const OUTBOX_PREFIX = 'parley.outbox.';

export class RoomState {
  constructor(room) {
    this.id = room.id;
    this.room = room;
    this.role = room.role || 'member';
    this.readSeq = room.read_seq ?? 0;
    this.unread = room.unread ?? 0;
    /** Highest event seq applied with nothing missing before it. */
    this.seen = room.last_seq ?? 0;
    /** Events that arrived after a gap, by seq, until the gap is filled. */
    this.buffer = new Map();
    this.messages = []; // ascending seq
    this.byId = new Map();
    this.loaded = false; // the newest page has been fetched
    this.hasMore = true; // older messages exist on the server
    this.loadingOlder = false;
    this.pending = new Map(); // client_msg_id -> outbox entry
    this.members = null; // Map user_id -> role, once fetched
    this.typing = new Map(); // user_id -> expiry (ms)
    this.lastActivity = null; // ISO time of the newest message or event seen
    this.preview = null; // {sender_id, text}
    this.dmUserId = null; // the other member of a direct room
    this.groupUserIds = null; // the other members of a group direct room, once known
    /** Threads opened in this room: root id -> {root, replies: Map id -> Message, loaded, hasMore}. */
    this.threads = new Map();
    this.markerSeq = null; // "new messages" line: read_seq when the room was opened
    /** Membership and room changes seen live, shown as system lines (ascending seq). */
    this.notices = [];
    /** Name and topic as the last room event left them (REST answers may run ahead). */
    this.named = { name: room.name || '', topic: room.topic || '' };
  }

  /** A direct room, 1:1 or group: no name of its own, no roles, no invitations. */
  get isDm() {
    return this.room.kind === 'dm' || this.room.kind === 'group_dm';
  }

  get isGroup() {
    return this.room.kind === 'group_dm';
  }

  /** Keep an open thread's copy of a reply (or its root) current. */
  noteThreadMessage(message) {
    const rootId = message.thread_root_id;
    const thread = this.threads.get(rootId || message.id);
    if (!thread) return false;
    if (!rootId) thread.root = { ...thread.root, ...message };
    else {
      const old = thread.replies.get(message.id);
      if (old && (message.version ?? 0) < (old.version ?? 0)) return false;
      thread.replies.set(message.id, message);
    }
    return true;
  }

  /** A root's summary as a reply's event left it (`root_thread`). */
  setThreadSummary(rootId, summary) {
    const root = this.byId.get(rootId);
    if (root) {
      const updated = { ...root, thread: summary };
      this.byId.set(rootId, updated);
      const i = this.indexOf(root.seq);
      if (i >= 0) this.messages[i] = updated;
    }
    const thread = this.threads.get(rootId);
    if (thread) thread.root = { ...thread.root, thread: summary };
  }

  /** Insert or update a message; older versions never replace newer ones. */
  upsert(message) {
    const old = this.byId.get(message.id);
    if (old) {
      if ((message.version ?? 0) < (old.version ?? 0)) return false;
      if ((message.version ?? 0) === (old.version ?? 0) && !message.deleted && old.deleted) {
        return false;
      }
      const index = this.indexOf(old.seq);
      const merged = { ...message, reactions: message.reactions ?? old.reactions ?? {} };
      this.messages[index] = merged;
      this.byId.set(message.id, merged);
      return true;
    }
    // Outside the loaded window (older than the oldest loaded message): paging
    // will fetch it in its current state.
    if (this.hasMore && this.messages.length && message.seq < this.messages[0].seq) return false;
    if (!this.loaded) return false;
    const at = this.insertionPoint(message.seq);
    this.messages.splice(at, 0, { ...message, reactions: message.reactions ?? {} });
    this.byId.set(message.id, this.messages[at]);
    return true;
  }

  indexOf(seq) {
    const i = this.insertionPoint(seq);
    return this.messages[i]?.seq === seq ? i : -1;
  }

  insertionPoint(seq) {
    let lo = 0;
    let hi = this.messages.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.messages[mid].seq < seq) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Prepend an older page (ascending), skipping what is already there. */
  addOlder(messages, hasMore) {
    const fresh = messages.filter((m) => !this.byId.has(m.id));
    for (const m of fresh) this.byId.set(m.id, { ...m, reactions: m.reactions ?? {} });
    this.messages = [...fresh.map((m) => this.byId.get(m.id)), ...this.messages];
    this.messages.sort((a, b) => a.seq - b.seq);
    this.hasMore = hasMore;
  }

  /** Load the newest page, merged with anything events already brought. */
  setLatest(messages, hasMore) {
    const known = this.messages;
    this.messages = [];
    this.byId.clear();
    this.loaded = true;
    this.hasMore = false;
    for (const m of messages) this.upsert(m);
    for (const m of known) this.upsert(m);
    this.hasMore = hasMore;
  }

  lastMessage() {
    for (let i = this.messages.length - 1; i >= 0; i--) {
      if (!this.messages[i].deleted) return this.messages[i];
    }
    return null;
  }
}

export class Store {
  constructor() {
    this.me = null;
    this.users = new Map();
    this.rooms = new Map();
    this.presence = new Map(); // user_id -> {status, last_active_at}
    this.currentRoomId = null;
    this.conn = { state: 'idle', info: {}, everLive: false };
    this.listeners = new Set();
    this.dirty = new Set();
    this.scheduled = false;
  }

  // -- change notification --------------------------------------------------

  subscribe(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  touch(...topics) {
    for (const t of topics) this.dirty.add(t);
    if (this.scheduled) return;
    this.scheduled = true;
    // requestAnimationFrame does not run in hidden tabs; the timeout keeps state
    // and title fresh there (and in headless browsers).
    const flush = () => {
      if (!this.scheduled) return;
      this.scheduled = false;
      const dirty = this.dirty;
      this.dirty = new Set();
      for (const listener of this.listeners) listener(dirty);
    };
    requestAnimationFrame(flush);
    setTimeout(flush, 100);
  }

  // -- users and presence ---------------------------------------------------

  setUser(user) {
    if (!user?.id) return;
    const old = this.users.get(user.id);
    if (old && old.display_name === user.display_name && old.username === user.username) return;
    this.users.set(user.id, user);
    this.touch('users');
  }

  displayName(userId) {
    const user = this.users.get(userId);
    return user ? user.display_name || user.username : '…';
  }

  setPresence(userId, status, lastActiveAt) {
    this.presence.set(userId, { status, last_active_at: lastActiveAt });
    this.touch('presence');
  }

  // -- rooms ----------------------------------------------------------------

  get current() {
    return this.rooms.get(this.currentRoomId) || null;
  }

  /** Add or refresh a room from the API (GET /rooms entry or a Room). */
  putRoom(room, { seen } = {}) {
    let state = this.rooms.get(room.id);
    if (!state) {
      state = new RoomState(room);
      if (seen != null) state.seen = seen;
      this.rooms.set(room.id, state);
    } else {
      state.room = { ...state.room, ...room };
      if (room.role) state.role = room.role;
    }
    // Optional fields (not in the v1 contract): used when the server sends them.
    if (!state.lastActivity) state.lastActivity = room.last_activity_at || null;
    if (room.dm_user_id) state.dmUserId = room.dm_user_id;
    this.touch('rooms', `room:${room.id}`);
    return state;
  }

  removeRoom(roomId) {
    this.rooms.delete(roomId);
    if (this.currentRoomId === roomId) this.currentRoomId = null;
    this.touch('rooms', 'current');
  }

  roomName(state) {
    if (!state) return '';
    if (state.isGroup) {
      const others = state.groupUserIds || [];
      return others.length ? others.map((id) => this.displayName(id)).join(', ') : 'Group message';
    }
    if (state.isDm) {
      return state.dmUserId ? this.displayName(state.dmUserId) : 'Direct message';
    }
    return state.room.name || 'Untitled room';
  }

  /** Total unread messages (for the document title). */
  totalUnread() {
    let n = 0;
    for (const r of this.rooms.values()) n += r.unread;
    return n;
  }

  /**
   * Apply one room event, in seq order. Returns what the controller may want to
   * react to: {created: Message} for new messages.
   */
  applyEvent(r, ev) {
    const effects = {};
    this.touch(`room:${r.id}`);
    // The sidebar shows names, unread counts, activity and DM previews only.
    if (/^(room\.|member\.|message\.(created|deleted))/.test(ev.type)) this.touch('rooms');
    const notice = noticeOf(r, ev);
    if (notice) r.notices.push(notice);
    switch (ev.type) {
      case 'room.created':
      case 'room.updated':
        if (ev.room) {
          r.room = { ...r.room, ...ev.room, last_seq: r.room.last_seq };
          r.named = { name: r.room.name || '', topic: r.room.topic || '' };
        }
        break;
      case 'member.joined':
        if (r.members) {
          r.members.set(ev.user_id, ev.role || 'member');
          this.touch(`members:${r.id}`);
        }
        if (ev.user_id === this.me?.id && ev.role) r.role = ev.role;
        if (r.isDm && ev.user_id !== this.me?.id) r.dmUserId = ev.user_id;
        if (r.isGroup && r.groupUserIds && ev.user_id !== this.me?.id && !r.groupUserIds.includes(ev.user_id)) {
          r.groupUserIds = [...r.groupUserIds, ev.user_id];
        }
        break;
      case 'member.left':
        if (r.members) {
          r.members.delete(ev.user_id);
          this.touch(`members:${r.id}`);
        }
        r.typing.delete(ev.user_id);
        if (r.groupUserIds) r.groupUserIds = r.groupUserIds.filter((id) => id !== ev.user_id);
        break;
      case 'message.created': {
        const m = ev.message;
        if (!m) break;
        const mine = m.sender_id === this.me?.id;
        if (mine && m.client_msg_id && r.pending.delete(m.client_msg_id)) this.saveOutbox();
        r.upsert(m);
        if (!mine && !m.deleted && m.seq > r.readSeq) r.unread += 1;
        r.typing.delete(m.sender_id);
        r.preview = { sender_id: m.sender_id, text: m.body };
        effects.created = m;
        this.applyThread(r, m, ev);
        break;
      }
      case 'message.edited':
      case 'message.deleted':
        if (ev.message) {
          r.upsert(ev.message);
          this.applyThread(r, ev.message, ev);
          if (ev.type === 'message.deleted' && r.preview && r.lastMessage()?.id !== ev.message.id) {
            const last = r.lastMessage();
            r.preview = last ? { sender_id: last.sender_id, text: last.body } : r.preview;
          }
        }
        break;
      case 'reaction.added':
      case 'reaction.removed': {
        const m = r.byId.get(ev.message_id);
        if (!m) break;
        const reactions = { ...(m.reactions || {}) };
        const users = new Set(reactions[ev.emoji] || []);
        if (ev.type === 'reaction.added') users.add(ev.user_id);
        else users.delete(ev.user_id);
        if (users.size) reactions[ev.emoji] = [...users];
        else delete reactions[ev.emoji];
        const updated = { ...m, reactions };
        r.byId.set(m.id, updated);
        const i = r.indexOf(m.seq);
        if (i >= 0) r.messages[i] = updated;
        break;
      }
      default:
        break; // unknown event types are ignored (protocol.md: clients ignore them)
    }
    r.seen = Math.max(r.seen, ev.seq);
    r.room.last_seq = Math.max(r.room.last_seq || 0, ev.seq);
    if (ev.type === 'message.created' && ev.created_at) r.lastActivity = ev.created_at;
    return effects;
  }

  /** A message event's share in threads: the reply in an open thread, the root's summary. */
  applyThread(r, message, ev) {
    const rootId = message.thread_root_id;
    if (r.noteThreadMessage(message)) this.touch(`thread:${rootId || message.id}`);
    if (rootId && 'root_thread' in ev) {
      r.setThreadSummary(rootId, ev.root_thread);
      this.touch(`thread:${rootId}`);
    }
  }

  // -- the outbox (messages not yet acknowledged) ----------------------------

  addPending(r, entry) {
    r.pending.set(entry.client_msg_id, entry);
    this.saveOutbox();
    this.touch(`room:${r.id}`, 'rooms');
  }

  updatePending(roomId, clientMsgId, changes) {
    const r = this.rooms.get(roomId);
    const entry = r?.pending.get(clientMsgId);
    if (!entry) return null;
    Object.assign(entry, changes);
    this.saveOutbox();
    this.touch(`room:${roomId}`);
    return entry;
  }

  /** An acknowledged message replaces its pending entry (once, whichever of ack/event comes first). */
  confirm(message) {
    const r = this.rooms.get(message.room_id);
    if (!r) return;
    if (message.client_msg_id) r.pending.delete(message.client_msg_id);
    r.upsert(message);
    this.saveOutbox();
    this.touch(`room:${r.id}`, 'rooms');
  }

  allPending() {
    const all = [];
    for (const r of this.rooms.values()) all.push(...r.pending.values());
    return all;
  }

  saveOutbox() {
    if (!this.me) return;
    const entries = this.allPending().map(({ room_id, client_msg_id, body, created_at, state }) => ({
      room_id,
      client_msg_id,
      body,
      created_at,
      state,
    }));
    try {
      if (entries.length) localStorage.setItem(OUTBOX_PREFIX + this.me.id, JSON.stringify(entries));
      else localStorage.removeItem(OUTBOX_PREFIX + this.me.id);
    } catch {
      /* storage full or disabled: the outbox lives in memory only */
    }
  }

  /** Outbox entries left by an earlier page load of this user. */
  loadOutbox() {
    if (!this.me) return [];
    try {
      const entries = JSON.parse(localStorage.getItem(OUTBOX_PREFIX + this.me.id) || '[]');
      return Array.isArray(entries) ? entries : [];
    } catch {
      return [];
    }
  }
}

/**
 * The system line an event makes in the timeline, or null. Data, not text: names
 * are resolved when drawn, since the users may not be fetched yet. Direct rooms
 * get none (their two joins are how the conversation starts).
 */
export function noticeOf(r, ev) {
  // A group direct room shows who left (anyone may); its joins are how it starts.
  const shown = !r.isDm || (r.isGroup && ev.type === 'member.left');
  if (!shown || r.notices.some((n) => n.seq === ev.seq)) return null;
  const base = { seq: ev.seq, created_at: ev.created_at, type: ev.type, actor_id: ev.actor_id || null };
  if (ev.type === 'member.joined') {
    return { ...base, user_id: ev.user_id, invited_by: ev.invited_by || null };
  }
  if (ev.type === 'member.left') {
    return { ...base, user_id: ev.user_id, reason: ev.reason || 'left' };
  }
  if (ev.type === 'room.updated' && ev.room) {
    const changes = {};
    for (const key of ['name', 'topic']) {
      if (key in ev.room && (ev.room[key] || '') !== (r.named[key] || '')) changes[key] = ev.room[key] || '';
    }
    return Object.keys(changes).length ? { ...base, changes } : null;
  }
  return null;
}

/** The text of a system line; `name(user_id)` gives a display name. */
export function noticeText(n, name, me) {
  const who = (id) => (id && id === me ? 'You' : name(id));
  const by = n.actor_id && n.actor_id !== n.user_id ? who(n.actor_id) : null;
  if (n.type === 'member.joined') {
    const adder = n.invited_by || (by ? n.actor_id : null);
    return adder ? `${who(adder)} added ${who(n.user_id)}` : `${who(n.user_id)} joined`;
  }
  if (n.type === 'member.left') {
    if (n.reason === 'kicked') return by ? `${by} removed ${who(n.user_id)}` : `${who(n.user_id)} was removed`;
    if (n.reason === 'banned') return by ? `${by} banned ${who(n.user_id)}` : `${who(n.user_id)} was banned`;
    return `${who(n.user_id)} left`;
  }
  const parts = [];
  if ('name' in n.changes) parts.push(`renamed the room to “${n.changes.name}”`);
  if ('topic' in n.changes) parts.push(n.changes.topic ? `set the topic to “${n.changes.topic}”` : 'cleared the topic');
  return `${n.actor_id ? who(n.actor_id) : 'Someone'} ${parts.join(' and ')}`;
}
