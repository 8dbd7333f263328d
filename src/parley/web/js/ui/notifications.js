// The notification feed: a bell in the room header with the unread count, a panel
// listing the newest notifications (a click opens the room and marks it read),
// "mark all read", the per-room level dialog, and the browser's own notifications
// (Notification API) while the tab is hidden, once the user allowed them.
//
// The server is the truth: the panel reloads the feed each time it opens, and the
// live `notification` frames only put new ones on top meanwhile. Opening a room
// marks its notifications read, as it clears the room's unread count.

import { plainText } from '../markdown.js';
import { formatAgo, formatFull, h } from '../util.js';
import { formDialog } from './dialogs.js';
import { icon } from './icons.js';

const PAGE = 30;
const WHY = {
  mention: 'mentioned you',
  room_mention: 'notified the room',
  reply: 'replied in a thread',
  dm: 'sent you a message',
  message: 'posted',
};

export class Notifications {
  /**
   * @param {object} o
   * @param {import('../api.js').Api} o.api
   * @param {import('../store.js').Store} o.store
   * @param {(roomId: string) => void} o.onOpen  open a room
   * @param {(text: string, kind?: string) => void} o.toast
   */
  constructor({ api, store, onOpen, toast }) {
    Object.assign(this, { api, store, onOpen, toast });
    this.items = [];
    this.unread = 0;
    this.hasMore = false;
    this.roomId = null;
    this.count = h('span', { id: 'notif-count', class: 'badge notif-count', hidden: true });
    this.button = h(
      'button',
      {
        id: 'notif-toggle',
        class: 'icon-btn notif-toggle',
        type: 'button',
        title: 'Notifications',
        'aria-label': 'Notifications',
        'aria-haspopup': 'dialog',
        'aria-controls': 'notif-panel',
        'aria-expanded': 'false',
        onclick: () => this.toggle(),
      },
      icon('bell'),
      this.count,
    );
    document.querySelector('.room-tools').prepend(this.button);
    this.list = h('ol', { class: 'notif-list' });
    this.more = h('button', { type: 'button', class: 'link-btn notif-more', hidden: true, onclick: () => this.loadOlder() }, 'Older notifications');
    this.allow = h('button', { type: 'button', class: 'link-btn', hidden: true, onclick: () => this.askPermission() }, 'Enable desktop notifications');
    this.panel = h(
      'section',
      { id: 'notif-panel', class: 'notif-panel', role: 'dialog', 'aria-label': 'Notifications', hidden: true },
      h(
        'div',
        { class: 'notif-head' },
        h('h2', null, 'Notifications'),
        h('button', { type: 'button', class: 'link-btn', onclick: () => this.markAll() }, 'Mark all read'),
      ),
      this.allow,
      this.list,
      this.more,
    );
    document.getElementById('main').append(this.panel);
    document.addEventListener('keydown', (event) => {
      if (event.key === 'Escape' && !this.panel.hidden) this.close(true);
    });
    document.addEventListener('pointerdown', (event) => {
      if (!this.panel.hidden && !this.panel.contains(event.target) && !this.button.contains(event.target)) this.close();
    });
  }

  async load() {
    try {
      const page = await this.api.notifications({ limit: PAGE });
      this.items = page.notifications;
      this.unread = page.unread;
      this.hasMore = page.has_more;
    } catch (err) {
      this.toast(`Could not load notifications: ${err.message}`, 'error');
    }
    this.render();
  }

  /** A live `notification` frame. */
  arrived(n) {
    if (this.items.some((x) => x.id === n.id)) return;
    if (n.room_id === this.store.currentRoomId && document.visibilityState === 'visible') {
      this.items.unshift({ ...n, read: true });
      this.markRead([n.id]);
    } else {
      this.items.unshift(n);
      this.unread += 1;
      this.desktop(n);
    }
    this.render();
  }

  /** A message was deleted: the server deleted its notifications too. */
  messageDeleted(messageId) {
    const before = this.items.length;
    const gone = this.items.filter((n) => n.message.id === messageId && !n.read).length;
    this.items = this.items.filter((n) => n.message.id !== messageId);
    if (this.items.length === before) return;
    this.unread = Math.max(0, this.unread - gone);
    this.render();
  }

  /** The open room changed: its notifications are read now. */
  roomOpened(roomId) {
    if (roomId === this.roomId) return;
    this.roomId = roomId;
    const ids = this.items.filter((n) => !n.read && n.room_id === roomId).map((n) => n.id);
    if (ids.length) this.markRead(ids);
  }

  async markRead(ids) {
    for (const n of this.items) if (ids.includes(n.id)) n.read = true;
    try {
      this.unread = (await this.api.readNotifications(ids)).unread;
    } catch {
      // the next load puts it right
    }
    this.render();
  }

  async markAll() {
    for (const n of this.items) n.read = true;
    try {
      this.unread = (await this.api.readNotifications(null)).unread;
    } catch (err) {
      this.toast(`Could not mark them read: ${err.message}`, 'error');
    }
    this.render();
  }

  async loadOlder() {
    const last = this.items[this.items.length - 1];
    if (!last) return;
    try {
      const page = await this.api.notifications({ before: last.id, limit: PAGE });
      this.items.push(...page.notifications);
      this.unread = page.unread;
      this.hasMore = page.has_more;
    } catch (err) {
      this.toast(err.message, 'error');
    }
    this.render();
  }

  toggle() {
    if (this.panel.hidden) this.openPanel();
    else this.close(true);
  }

  async openPanel() {
    this.panel.hidden = false;
    this.button.setAttribute('aria-expanded', 'true');
    await this.load();
    this.panel.querySelector('button')?.focus();
  }

  close(restoreFocus = false) {
    if (this.panel.hidden) return;
    this.panel.hidden = true;
    this.button.setAttribute('aria-expanded', 'false');
    if (restoreFocus) this.button.focus();
  }

  render() {
    this.count.hidden = !this.unread;
    this.count.textContent = this.unread > 99 ? '99+' : String(this.unread);
    this.button.setAttribute('aria-label', this.unread ? `Notifications, ${this.unread} unread` : 'Notifications');
    this.allow.hidden = !('Notification' in window) || Notification.permission !== 'default';
    this.more.hidden = !this.hasMore;
    if (this.panel.hidden) return;
    if (!this.items.length) {
      this.list.replaceChildren(h('li', { class: 'notif-empty' }, 'Nothing yet. Mentions of you, @room and direct messages show up here.'));
      return;
    }
    this.list.replaceChildren(...this.items.map((n) => this.item(n)));
  }

  item(n) {
    const who = this.store.displayName(n.message.sender_id);
    const r = this.store.rooms.get(n.room_id);
    const where = r ? (r.isDm ? this.store.roomName(r) : `#${this.store.roomName(r)}`) : 'a room';
    const open = () => {
      if (!n.read) this.markRead([n.id]);
      this.close();
      this.onOpen(n.room_id);
    };
    return h(
      'li',
      { class: `notif-item${n.read ? '' : ' unread'}`, dataset: { kind: n.kind, id: n.id } },
      h(
        'button',
        { type: 'button', class: 'notif-open', onclick: open },
        h('span', { class: 'notif-title' }, `${who} ${WHY[n.kind] || 'posted'} in ${where}`),
        h('span', { class: 'notif-body' }, n.message.deleted ? 'This message was deleted.' : plainText(n.message.body, 140)),
        h('time', { datetime: n.created_at, title: formatFull(n.created_at) }, formatAgo(n.created_at)),
      ),
    );
  }

  // -- the browser's notifications --------------------------------------------

  async askPermission() {
    try {
      await Notification.requestPermission();
    } catch {
      // an old browser's callback form: ignore
    }
    this.render();
  }

  desktop(n) {
    if (document.visibilityState !== 'hidden' || !('Notification' in window)) return;
    if (Notification.permission !== 'granted') return;
    const who = this.store.displayName(n.message.sender_id);
    const r = this.store.rooms.get(n.room_id);
    const title = r && !r.isDm ? `${who} in #${this.store.roomName(r)}` : who;
    const shown = new Notification(title, { body: plainText(n.message.body, 200), tag: n.id });
    shown.onclick = () => {
      window.focus();
      this.markRead([n.id]);
      this.onOpen(n.room_id);
      shown.close();
    };
  }
}

/** The per-room level dialog (from the room menu). */
export async function levelDialog({ api, r, name }) {
  const { level } = await api.notificationLevel(r.id);
  formDialog({
    title: `Notifications for ${name}`,
    submitLabel: 'Save',
    fields: [
      {
        name: 'level',
        type: 'radio',
        label: 'Notify me about',
        value: level,
        options: [
          { value: 'all', label: 'Every message' },
          { value: 'mentions', label: 'Mentions only', hint: 'Mentions of you, @room and replies in your threads.' },
          { value: 'none', label: 'Nothing' },
        ],
      },
    ],
    onSubmit: async ({ level: chosen }) => {
      if (chosen && chosen !== level) await api.setNotificationLevel(r.id, chosen);
    },
  });
}
