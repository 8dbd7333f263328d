// The sidebar: rooms (alphabetical) and direct messages (most recent first), each
// with its unread count and last activity; the signed-in user's menu.

import { plainText } from '../markdown.js';
import { icon } from './icons.js';
import { clear, formatAgo, formatFull, h, hashIndex, initials } from '../util.js';

export function avatar(store, userId, size = '') {
  const name = store.displayName(userId);
  return h(
    'span',
    { class: `avatar ${size} c${hashIndex(userId || '', 8)}`, 'aria-hidden': 'true' },
    initials(name),
  );
}

/**
 * Our own status comes from our connection (the server does not echo our own
 * presence back): live and visible is online, live and hidden is idle.
 */
export function ownStatus(store) {
  if (store.conn.state !== 'live') return 'offline';
  return document.visibilityState === 'visible' ? 'online' : 'idle';
}

export function statusOf(store, userId) {
  if (userId && userId === store.me?.id) return ownStatus(store);
  return store.presence.get(userId)?.status || 'unknown';
}

export function presenceDot(store, userId) {
  const status = statusOf(store, userId);
  const label = status === 'unknown' ? '' : status;
  return h('span', {
    class: `presence ${status}`,
    title: label || null,
    'aria-hidden': 'true',
  });
}

export class Sidebar {
  constructor({ store, onMeMenu }) {
    this.store = store;
    this.roomList = document.getElementById('room-list');
    this.dmList = document.getElementById('dm-list');
    this.meButton = document.getElementById('me-button');
    this.meButton.addEventListener('click', () => onMeMenu(this.meButton));
  }

  render() {
    const { store } = this;
    const rooms = [];
    const dms = [];
    for (const r of store.rooms.values()) (r.isDm ? dms : rooms).push(r);
    rooms.sort((a, b) => store.roomName(a).localeCompare(store.roomName(b)));
    dms.sort((a, b) => (b.lastActivity || '').localeCompare(a.lastActivity || ''));
    this.fill(this.roomList, rooms, 'No rooms yet: create one or browse.');
    this.fill(this.dmList, dms, 'No conversations yet.');
    const me = store.me;
    if (me) {
      clear(this.meButton).append(
        h('span', { class: 'me-avatar' }, avatar(store, me.id, 'sm'), presenceDot(store, me.id)),
        h('span', { class: 'me-name' }, me.display_name || me.username),
        // Named by its content, so the name holds the visible text (WCAG 2.5.3).
        h('span', { class: 'sr-only' }, ` (@${me.username}), ${ownStatus(store)}: account menu`),
      );
    }
  }

  fill(list, rooms, emptyText) {
    const focusedId = list.contains(document.activeElement)
      ? document.activeElement.dataset.roomId
      : null;
    clear(list);
    if (!rooms.length) {
      list.append(h('li', { class: 'side-empty' }, emptyText));
      return;
    }
    for (const r of rooms) list.append(this.item(r));
    if (focusedId) list.querySelector(`[data-room-id="${CSS.escape(focusedId)}"]`)?.focus();
  }

  item(r) {
    const { store } = this;
    const active = r.id === store.currentRoomId;
    const name = store.roomName(r);
    const unread = active ? 0 : r.unread;
    const mark = r.isGroup
      ? h('span', { class: 'dm-icon group', 'aria-hidden': 'true' }, icon('users'))
      : r.isDm
      ? h('span', { class: 'dm-icon' }, avatar(store, r.dmUserId || r.id, 'xs'), presenceDot(store, r.dmUserId))
      : h('span', { class: 'room-icon', 'aria-hidden': 'true' }, r.room.visibility === 'private' ? icon('lock') : '#');
    const failed = [...r.pending.values()].some((p) => p.state === 'failed');
    const preview =
      r.isDm && r.preview
        ? `${r.preview.sender_id === store.me?.id ? 'You: ' : ''}${plainText(r.preview.text, 60)}`
        : '';
    return h(
      'li',
      null,
      h(
        'a',
        {
          href: `#/r/${encodeURIComponent(r.id)}`,
          class: `room-link${active ? ' active' : ''}${unread ? ' unread' : ''}`,
          'aria-current': active ? 'page' : null,
          dataset: { roomId: r.id },
          title: r.lastActivity ? `${name} · last activity ${formatFull(r.lastActivity)}` : name,
        },
        mark,
        h(
          'span',
          { class: 'room-text' },
          h('span', { class: 'room-name' }, name),
          preview ? h('span', { class: 'room-preview' }, preview) : null,
        ),
        h(
          'span',
          { class: 'room-meta' },
          failed ? h('span', { class: 'failed-mark', title: 'A message was not sent' }, '!') : null,
          unread
            ? h('span', { class: 'badge' }, unread > 99 ? '99+' : String(unread))
            : r.lastActivity
              ? h('time', { datetime: r.lastActivity }, formatAgo(r.lastActivity))
              : null,
        ),
        unread ? h('span', { class: 'sr-only' }, `, ${unread} unread`) : null,
      ),
    );
  }
}
