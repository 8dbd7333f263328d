// Unit tests of the web client's delivery logic (src/parley/web/js/client.js and
// store.js) with a fake API and socket: each room event applied once and in seq
// order, gaps filled from the event log, the outbox matched to acks and events.
// Run with `node --test tests/e2e/js/` (pytest runs them: tests/e2e/test_web_js.py).

import assert from 'node:assert/strict';
import { test } from 'node:test';

// The little of the browser that store.js and client.js touch outside boot().
const storage = new Map();
globalThis.localStorage = {
  getItem: (k) => (storage.has(k) ? storage.get(k) : null),
  setItem: (k, v) => storage.set(k, String(v)),
  removeItem: (k) => storage.delete(k),
};
globalThis.requestAnimationFrame = (fn) => setTimeout(fn, 0);

const web = new URL('../../../src/parley/web/js/', import.meta.url);
const { Client } = await import(new URL('client.js', web));
const { Store } = await import(new URL('store.js', web));
const { State } = await import(new URL('socket.js', web));

const ME = 'u-me';
const OTHER = 'u-other';
const ROOM = 'r-1';

function message(seq, body, extra = {}) {
  return {
    id: `m-${seq}`,
    room_id: ROOM,
    seq,
    sender_id: OTHER,
    body,
    client_msg_id: null,
    created_at: `2026-11-28T10:00:${String(seq).padStart(2, '0')}.000000Z`,
    edited_at: null,
    version: 1,
    deleted: false,
    reactions: {},
    ...extra,
  };
}

const created = (seq, body, extra) => ({
  room_id: ROOM,
  seq,
  type: 'message.created',
  created_at: '2026-11-28T10:00:00Z',
  actor_id: OTHER,
  message: message(seq, body, extra),
});

/** A client with one loaded room whose log is at `seen`, a fake API and socket. */
function setup({ seen = 3, log = [] } = {}) {
  const store = new Store();
  store.me = { id: ME, username: 'me', display_name: 'Me' };
  store.setUser(store.me);
  const calls = [];
  const api = {
    base: '/api/v1',
    async events(roomId, afterSeq, limit) {
      calls.push(['events', roomId, afterSeq, limit]);
      const events = log.filter((e) => e.seq > afterSeq).slice(0, limit);
      return { events, has_more: false };
    },
    async user(id) {
      return { id, username: id, display_name: id };
    },
  };
  const sent = [];
  const client = new Client({ api, store, hooks: {} });
  client.socket = {
    state: State.LIVE,
    live: true,
    ready: true,
    send: (frame) => {
      sent.push(frame);
      return true;
    },
    nextId: (p) => `${p}-1`,
  };
  const r = store.putRoom({ id: ROOM, name: 'general', kind: 'room', last_seq: seen, read_seq: seen, unread: 0 });
  r.setLatest([], false);
  return { store, client, api, calls, sent, r };
}

const bodies = (r) => r.messages.map((m) => m.body);
const settle = () => new Promise((resolve) => setTimeout(resolve, 400));

test('an event seen twice is applied once', () => {
  const { client, r } = setup();
  client.onEvent(created(4, 'hello'));
  client.onEvent(created(4, 'hello'));
  client.onEvent(created(3, 'old news'));
  assert.deepEqual(bodies(r), ['hello']);
  assert.equal(r.seen, 4);
  assert.equal(r.unread, 1);
});

test('a gap is filled from the event log, in order, without duplicates', async () => {
  const log = [4, 5, 6, 7].map((s) => created(s, `m${s}`));
  const { client, r, calls } = setup({ log });
  client.onEvent(log[2]); // seq 6 arrives first: 4 and 5 are missing
  assert.deepEqual(bodies(r), []);
  assert.equal(r.buffer.size, 1);
  await settle();
  assert.deepEqual(calls, [['events', ROOM, 3, 200]]);
  assert.deepEqual(bodies(r), ['m4', 'm5', 'm6', 'm7']);
  assert.equal(r.seen, 7);
  assert.equal(r.buffer.size, 0);
  client.onEvent(log[1]); // late duplicate from the socket
  assert.deepEqual(bodies(r), ['m4', 'm5', 'm6', 'm7']);
});

test('no gap fill while a resume is replaying; checked once it is done', async () => {
  const log = [4, 5].map((s) => created(s, `m${s}`));
  const { client, r, calls } = setup({ log });
  client.socket.state = State.RESUMING;
  client.onEvent(log[1]);
  await settle();
  assert.deepEqual(calls, []);
  client.socket.state = State.LIVE;
  client.onFrame({ type: 'resumed', id: 'resume-1' });
  await settle();
  assert.deepEqual(bodies(r), ['m4', 'm5']);
});

test('events replayed after a resume go out in order with nothing doubled', () => {
  const { client, r } = setup();
  for (const seq of [4, 5]) client.onEvent(created(seq, `m${seq}`));
  // The socket reconnects; the server replays from the cursor and overlaps.
  assert.deepEqual(client.cursors(), { [ROOM]: 5 });
  for (const seq of [4, 5, 6]) client.onEvent(created(seq, `m${seq}`));
  assert.deepEqual(bodies(r), ['m4', 'm5', 'm6']);
});

test('a pending send becomes one message whether the ack or the event comes first', () => {
  for (const order of [['ack', 'event'], ['event', 'ack']]) {
    storage.clear();
    const { client, r, sent } = setup();
    assert.equal(client.send(r, 'hi there'), null);
    const [frame] = sent;
    assert.equal(frame.type, 'send');
    assert.equal(frame.id, frame.client_msg_id);
    assert.equal(r.pending.size, 1);
    assert.ok(storage.get(`parley.outbox.${ME}`).includes('hi there'));
    const stored = message(4, 'hi there', { sender_id: ME, client_msg_id: frame.client_msg_id });
    for (const step of order) {
      if (step === 'ack') client.onFrame({ type: 'ack', id: frame.id, message: stored });
      else client.onEvent({ ...created(4, ''), actor_id: ME, message: stored });
    }
    assert.equal(r.pending.size, 0);
    assert.deepEqual(bodies(r), ['hi there']);
    assert.equal(r.unread, 0, 'own messages are never unread');
    assert.equal(storage.has(`parley.outbox.${ME}`), false);
  }
});

test('a resend after reconnecting keeps the client_msg_id', () => {
  const { client, r, sent } = setup();
  client.send(r, 'again');
  client.flushOutbox();
  assert.equal(sent.length, 2);
  assert.equal(sent[0].client_msg_id, sent[1].client_msg_id);
});

test('offline sends wait for the connection; only unacknowledged live sends time out', () => {
  const { client, r, sent } = setup();
  client.socket.ready = false;
  client.socket.live = false;
  client.socket.send = () => false;
  client.send(r, 'written offline');
  const [entry] = r.pending.values();
  entry.queuedAt -= 3_600_000; // an hour ago
  client.sweep();
  assert.equal(entry.state, 'pending');
  assert.equal(entry.sentAt, 0);
  // Back online: it goes out, and only an ack that never comes fails it.
  client.socket.ready = client.socket.live = true;
  client.socket.send = (frame) => sent.push(frame) > 0;
  client.flushOutbox();
  assert.equal(sent.at(-1).client_msg_id, entry.client_msg_id);
  client.sweep();
  assert.equal(entry.state, 'pending');
  entry.sentAt -= 31_000;
  client.sweep();
  assert.equal(entry.state, 'failed');
});

test('refused sends fail (retry keeps the id); rate limits retry by themselves', () => {
  const { client, r, sent } = setup();
  client.send(r, 'too much');
  const id = sent[0].id;
  client.onFrame({ type: 'error', id, code: 'too_large', message: 'big' });
  assert.equal(r.pending.get(id).state, 'failed');
  client.retry(r, id);
  assert.equal(r.pending.get(id).state, 'pending');
  assert.equal(sent.at(-1).client_msg_id, id);
  client.onFrame({ type: 'error', id, code: 'rate_limited', message: 'slow down', retry_after: 1 });
  assert.equal(r.pending.get(id).state, 'pending');
  clearTimeout(r.pending.get(id).retryTimer);
  client.onFrame({ type: 'error', id, code: 'unavailable', message: 'database busy' });
  assert.equal(r.pending.get(id).state, 'pending', 'transient errors are retried quietly');
  clearTimeout(r.pending.get(id).retryTimer);
  client.discard(r, id);
  assert.equal(r.pending.size, 0);
});

test('edits never go back in time; reactions are sets', () => {
  const { client, r } = setup();
  client.onEvent(created(4, 'v1'));
  const v3 = message(4, 'v3', { version: 3, edited_at: '2026-11-28T10:01:00Z' });
  r.upsert(v3); // e.g. from a PATCH answer
  client.onEvent({ room_id: ROOM, seq: 5, type: 'message.edited', message: message(4, 'v2', { version: 2 }) });
  assert.deepEqual(bodies(r), ['v3']);
  const react = (seq, type, user) =>
    client.onEvent({ room_id: ROOM, seq, type, message_id: 'm-4', user_id: user, emoji: '👍' });
  react(6, 'reaction.added', OTHER);
  react(7, 'reaction.added', ME);
  react(8, 'reaction.removed', OTHER);
  assert.deepEqual(r.messages[0].reactions, { '👍': [ME] });
  client.onEvent({ room_id: ROOM, seq: 9, type: 'message.deleted', message: message(4, '', { version: 4, deleted: true }) });
  assert.equal(r.messages[0].deleted, true);
});

test('being added to a room shows it; being removed hides it', () => {
  const { client, store } = setup();
  let gone = null;
  client.hooks.roomGone = (room, reason) => {
    gone = [room.id, reason];
  };
  client.api.room = async (id) => ({ id, name: 'new', kind: 'room', visibility: 'public', topic: '', last_seq: 1 });
  client.api.messages = async () => ({ messages: [], has_more: false });
  client.onEvent({ room_id: 'r-2', seq: 3, type: 'member.joined', user_id: ME, role: 'member' });
  assert.ok(store.rooms.has('r-2'));
  assert.equal(store.rooms.get('r-2').seen, 3);
  client.onEvent({ room_id: 'r-2', seq: 4, type: 'member.left', user_id: ME, reason: 'kicked' });
  assert.equal(store.rooms.has('r-2'), false);
  assert.deepEqual(gone, ['r-2', 'kicked']);
});

test('reading moves the cursor forward only, and tells the server once settled', async () => {
  const { client, r, sent } = setup();
  for (const seq of [4, 5, 6]) client.onEvent(created(seq, `m${seq}`));
  assert.equal(r.unread, 3);
  client.noteRead(r, 5);
  assert.equal(r.unread, 1);
  client.noteRead(r, 4);
  assert.equal(r.readSeq, 5);
  client.noteRead(r, 6);
  assert.equal(r.unread, 0);
  await settle();
  assert.deepEqual(sent.filter((f) => f.type === 'read'), [{ type: 'read', room_id: ROOM, seq: 6 }]);
});
