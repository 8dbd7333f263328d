// Unit tests of the timeline's system lines (store.js: noticeOf, noticeText):
// which events make a line, and what it says. Run with `node --test tests/e2e/js/`.

import assert from 'node:assert/strict';
import { test } from 'node:test';

const web = new URL('../../../src/parley/web/js/', import.meta.url);
const { RoomState, noticeOf, noticeText } = await import(new URL('store.js', web));

const names = { 'u-a': 'Alice', 'u-b': 'Bob' };
const name = (id) => names[id];
const room = (kind = 'room') => new RoomState({ id: 'r', name: 'garden', topic: 'roses', kind });
const ev = (type, extra) => ({ type, seq: 5, created_at: '2026-01-01T00:00:00Z', room_id: 'r', ...extra });
const text = (r, e, me = 'u-me') => noticeText(noticeOf(r, e), name, me);

test('joins, leaves, kicks and bans name who did what', () => {
  assert.equal(text(room(), ev('member.joined', { user_id: 'u-b', actor_id: 'u-b' })), 'Bob joined');
  assert.equal(text(room(), ev('member.joined', { user_id: 'u-b', actor_id: 'u-a', invited_by: 'u-a' })), 'Alice added Bob');
  assert.equal(text(room(), ev('member.left', { user_id: 'u-b', actor_id: 'u-b', reason: 'left' })), 'Bob left');
  assert.equal(text(room(), ev('member.left', { user_id: 'u-b', actor_id: 'u-a', reason: 'kicked' })), 'Alice removed Bob');
  assert.equal(text(room(), ev('member.left', { user_id: 'u-b', actor_id: 'u-a', reason: 'banned' }), 'u-a'), 'You banned Bob');
  assert.equal(text(room(), ev('member.left', { user_id: 'u-b', reason: 'banned' })), 'Bob was banned');
});

test('room changes say only what changed', () => {
  const renamed = ev('room.updated', { actor_id: 'u-a', room: { name: 'orchard', topic: 'roses' } });
  assert.equal(text(room(), renamed), 'Alice renamed the room to “orchard”');
  const both = ev('room.updated', { actor_id: 'u-a', room: { name: 'orchard', topic: '' } });
  assert.equal(text(room(), both), 'Alice renamed the room to “orchard” and cleared the topic');
  assert.equal(noticeOf(room(), ev('room.updated', { actor_id: 'u-a', room: { name: 'garden', topic: 'roses' } })), null);
});

test('direct rooms, other events and repeats make no line', () => {
  assert.equal(noticeOf(room('dm'), ev('member.joined', { user_id: 'u-b' })), null);
  assert.equal(noticeOf(room(), ev('message.created', { message: {} })), null);
  const r = room();
  r.notices.push(noticeOf(r, ev('member.joined', { user_id: 'u-b' })));
  assert.equal(noticeOf(r, ev('member.joined', { user_id: 'u-b' })), null);
});
