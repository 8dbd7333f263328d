// The members panel: members by role, with presence.

import { clear, h } from '../util.js';
import { icon } from './icons.js';
import { avatar, presenceDot, statusOf } from './sidebar.js';

const ROLES = [
  ['owner', 'Owner'],
  ['admin', 'Admins'],
  ['member', 'Members'],
];
const RANK = { offline: 2, unknown: 1, idle: 1, online: 0 };
const POWER = { owner: 2, admin: 1, member: 0 };

export class Members {
  constructor({ store, onAdd, onMessage, onRemove }) {
    this.store = store;
    this.onRemove = onRemove;
    this.onAdd = onAdd;
    this.onMessage = onMessage;
    this.panel = document.getElementById('members');
    this.list = document.getElementById('member-list');
  }

  render() {
    const { store } = this;
    const r = store.current;
    if (this.panel.hidden || !r) return;
    clear(this.list);
    if (!r.isDm && (r.role === 'owner' || r.role === 'admin')) {
      this.list.append(
        h('button', { type: 'button', class: 'btn btn-block add-people', onclick: () => this.onAdd(r) }, 'Add people'),
      );
    }
    if (!r.members) {
      this.list.append(h('p', { class: 'muted' }, 'Loading…'));
      return;
    }
    const status = (id) => statusOf(store, id);
    for (const [role, label] of ROLES) {
      const ids = [...r.members].filter(([, rl]) => rl === role).map(([id]) => id);
      if (!ids.length) continue;
      ids.sort(
        (a, b) =>
          RANK[status(a)] - RANK[status(b)] || store.displayName(a).localeCompare(store.displayName(b)),
      );
      this.list.append(
        h('h3', { class: 'member-group' }, `${label} — ${ids.length}`),
        h(
          'ul',
          { class: 'member-ul' },
          ids.map((id) => this.member(id, role, status(id))),
        ),
      );
    }
  }

  member(id, role, status) {
    const { store } = this;
    const user = store.users.get(id);
    const me = id === store.me?.id;
    const statusText = status === 'unknown' ? '' : `, ${status}`;
    return h(
      'li',
      { class: 'member' },
      h('span', { class: 'member-avatar' }, avatar(store, id, 'sm'), presenceDot(store, id)),
      h(
        'span',
        { class: 'member-text' },
        h('span', { class: 'member-name' }, store.displayName(id), me ? h('span', { class: 'muted' }, ' (you)') : null),
        user ? h('span', { class: 'member-username muted' }, `@${user.username}`) : null,
        h('span', { class: 'sr-only' }, `${role}${statusText}`),
      ),
      h(
        'span',
        { class: 'member-acts' },
        !me && user
          ? h(
              'button',
              {
                type: 'button',
                class: 'icon-btn member-act member-dm',
                title: `Message ${store.displayName(id)}`,
                'aria-label': `Message ${store.displayName(id)}`,
                onclick: () => this.onMessage(user),
              },
              icon('mail'),
            )
          : null,
        this.canRemove(role) ? this.removeButton(id, false) : null,
        this.canRemove(role) ? this.removeButton(id, true) : null,
      ),
    );
  }

  /** Admins and owners may remove members ranked below them (the server checks too). */
  canRemove(role) {
    const r = this.store.current;
    return !r.isDm && POWER[r.role] >= 1 && POWER[r.role] > POWER[role];
  }

  removeButton(id, ban) {
    const name = this.store.displayName(id);
    const label = ban ? `Ban ${name}` : `Remove ${name}`;
    return h(
      'button',
      {
        type: 'button',
        class: `icon-btn danger member-act member-${ban ? 'ban' : 'kick'}`,
        title: label,
        'aria-label': label,
        onclick: () => this.onRemove(this.store.current, id, ban),
      },
      icon(ban ? 'ban' : 'remove'),
    );
  }
}
