// The room header: name, topic, members toggle, room options.

import { clear, h } from '../util.js';
import { icon } from './icons.js';
import { presenceDot } from './sidebar.js';

export class Header {
  constructor({ store, onMembersToggle, onRoomMenu }) {
    this.store = store;
    this.title = document.getElementById('room-title');
    this.topic = document.getElementById('room-topic');
    this.membersButton = document.getElementById('members-toggle');
    this.membersCount = document.getElementById('members-count');
    this.menuButton = document.getElementById('room-menu');
    this.membersButton.addEventListener('click', onMembersToggle);
    this.menuButton.addEventListener('click', () => onRoomMenu(this.menuButton));
  }

  render() {
    const { store } = this;
    const r = store.current;
    clear(this.title);
    if (!r) {
      this.title.textContent = 'Parley';
      this.topic.textContent = '';
      this.membersButton.hidden = true;
      this.menuButton.hidden = true;
      document.title = withUnread(store, 'Parley');
      return;
    }
    const name = store.roomName(r);
    if (r.isGroup) {
      this.title.append(h('span', { class: 'title-hash', 'aria-hidden': 'true' }, icon('users')), h('span', null, name));
      this.topic.textContent = `Group message · ${(r.groupUserIds?.length ?? 0) + 1} people`;
    } else if (r.isDm) {
      this.title.append(presenceDot(store, r.dmUserId), h('span', null, name));
      const user = store.users.get(r.dmUserId);
      const status = store.presence.get(r.dmUserId)?.status;
      this.topic.textContent = [user ? `@${user.username}` : '', status || ''].filter(Boolean).join(' · ');
    } else {
      this.title.append(
        h('span', { class: 'title-hash', 'aria-hidden': 'true' }, r.room.visibility === 'private' ? icon('lock') : '#'),
        h('span', null, name),
      );
      this.topic.textContent = r.room.topic || '';
      this.topic.title = r.room.topic || '';
    }
    this.membersButton.hidden = false;
    this.membersCount.textContent = r.members ? String(r.members.size) : '·';
    this.menuButton.hidden = false;
    document.title = withUnread(store, `${r.isDm ? '' : '#'}${name} · Parley`);
  }
}

function withUnread(store, title) {
  const n = store.totalUnread();
  return n ? `(${n}) ${title}` : title;
}
