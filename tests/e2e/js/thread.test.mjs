// Unit tests of threads and group direct rooms in the web client's store
// (src/parley/web/js/store.js): a reply's event moves its root's summary and
// reaches an open thread; deleting a reply takes the recounted summary; a group
// room is named by its other people and shows only who left.
// Run with `node --test tests/e2e/js/` (pytest runs them: tests/e2e/test_web_js.py).

import assert from 'node:assert/strict';
import { test } from 'node:test';

globalThis.localStorage = { getItem: () => null, setItem: () => {}, removeItem: () => {} };
globalThis.requestAnimationFrame = (fn) => setTimeout(fn, 0);

const web = new URL('../../../src/parley/web/js/', import.meta.url);
const { Store, noticeOf } = await import(new URL('store.js', web));

const ROOM = 'r-1';

function message(seq, extra = {}) {
  return {
    id: `m-${seq}`,
    room_id: ROOM,
    seq,
    sender_id: 'u-a',
    body: `body ${seq}`,
    client_msg_id: null,
    created_at: `2026-11-28T10:00:${String(seq).padStart(2, '0')}.000000Z`,
    edited_at: null,
    version: 1,
    deleted: false,
    reactions: {},
    thread_root_id: null,
    thread: null,
    ...extra,
  };
}

const event = (type, m, extra = {}) => ({ type, room_id: ROOM, seq: m.seq, created_at: m.created_at, message: m, ...extra });

function setUp(kind = 'room') {
  const store = new Store();
  store.me = { id: 'u-me', username: 'me', display_name: 'Me' };
  const r = store.putRoom({ id: ROOM, name: 'garden', kind, last_seq: 0 });
  r.setLatest([], false);
  return { store, r };
}

test('a reply moves its root summary and reaches the open thread', () => {
  const { store, r } = setUp();
  const root = message(1);
  store.applyEvent(r, event('message.created', root));
  r.threads.set(root.id, { root, replies: new Map(), loaded: true });
  const reply = message(2, { sender_id: 'u-b', thread_root_id: root.id });
  const summary = { reply_count: 1, last_reply_at: reply.created_at, participants: ['u-a', 'u-b'] };
  store.applyEvent(r, event('message.created', reply, { root_thread: summary }));
  assert.deepEqual(r.byId.get(root.id).thread, summary);
  assert.deepEqual(r.messages.find((m) => m.id === root.id).thread, summary);
  const thread = r.threads.get(root.id);
  assert.deepEqual([...thread.replies.keys()], [reply.id]);
  assert.deepEqual(thread.root.thread, summary);
  assert.ok(store.dirty.has(`thread:${root.id}`));

  const tombstone = { ...reply, body: '', deleted: true, version: 2 };
  store.applyEvent(r, { ...event('message.deleted', tombstone), seq: 3, root_thread: null });
  assert.equal(r.byId.get(root.id).thread, null);
  assert.equal(thread.replies.get(reply.id).deleted, true);
});

test('a reply to a thread nobody opened only moves the summary', () => {
  const { store, r } = setUp();
  const root = message(1);
  store.applyEvent(r, event('message.created', root));
  const reply = message(2, { thread_root_id: root.id });
  const summary = { reply_count: 1, last_reply_at: reply.created_at, participants: ['u-a'] };
  store.applyEvent(r, event('message.created', reply, { root_thread: summary }));
  assert.equal(r.threads.size, 0);
  assert.equal(r.byId.get(root.id).thread.reply_count, 1);
});

test('a group room is named by its other people and shows only who left', () => {
  const { store, r } = setUp('group_dm');
  assert.ok(r.isDm && r.isGroup);
  store.setUser({ id: 'u-b', username: 'bob', display_name: 'Bob' });
  store.setUser({ id: 'u-c', username: 'carol', display_name: 'Carol' });
  r.groupUserIds = ['u-b', 'u-c'];
  assert.equal(store.roomName(r), 'Bob, Carol');
  const joined = { type: 'member.joined', seq: 5, user_id: 'u-b', created_at: 'x' };
  assert.equal(noticeOf(r, joined), null);
  const left = { type: 'member.left', seq: 6, user_id: 'u-c', reason: 'left', created_at: 'x' };
  assert.equal(noticeOf(r, left).user_id, 'u-c');
  store.applyEvent(r, left);
  assert.equal(store.roomName(r), 'Bob');
});
