// Popup menus (room options, the user menu, the reaction picker), keyboard first:
// arrows move, Enter/Space choose, Escape or Tab close and focus returns to the
// button that opened it. Positioned through the CSSOM (allowed by the CSP,
// unlike style attributes).

import { h } from '../util.js';

let open = null;

export function closeMenu({ restoreFocus = true } = {}) {
  if (!open) return;
  const { el, anchor, cleanup } = open;
  open = null;
  cleanup();
  el.remove();
  anchor.setAttribute('aria-expanded', 'false');
  if (restoreFocus && anchor.isConnected) anchor.focus();
}

/**
 * Open a menu under (or above) `anchor`.
 * @param {HTMLElement} anchor
 * @param {Array<{label: string, onSelect: Function, danger?: boolean, hint?: string}>} items
 * @param {object} [o]  {label, grid: columns (for emoji), className}
 */
export function openMenu(anchor, items, { label = 'Menu', grid = 0, className = '' } = {}) {
  if (open?.anchor === anchor) {
    closeMenu();
    return;
  }
  closeMenu({ restoreFocus: false });
  const buttons = items.map((item) =>
    h(
      'button',
      {
        type: 'button',
        role: 'menuitem',
        tabindex: -1,
        class: `menu-item${item.danger ? ' danger' : ''}`,
        title: item.title || null,
        'aria-label': item.ariaLabel || null,
        onclick: () => {
          closeMenu();
          item.onSelect();
        },
      },
      item.label,
      item.hint ? h('span', { class: 'menu-hint' }, item.hint) : null,
    ),
  );
  const el = h(
    'div',
    { class: `menu ${grid ? 'menu-grid' : ''} ${className}`, role: 'menu', 'aria-label': label },
    buttons,
  );
  document.body.append(el);
  place(el, anchor);
  anchor.setAttribute('aria-expanded', 'true');

  const move = (delta) => {
    const i = buttons.indexOf(document.activeElement);
    const next = (i + delta + buttons.length) % buttons.length;
    buttons[next].focus();
  };
  const onKey = (event) => {
    const cols = grid || 1;
    const keys = {
      ArrowDown: cols,
      ArrowUp: -cols,
      ArrowRight: grid ? 1 : 0,
      ArrowLeft: grid ? -1 : 0,
    };
    if (event.key in keys && keys[event.key]) {
      event.preventDefault();
      move(keys[event.key]);
    } else if (event.key === 'Home' || event.key === 'End') {
      event.preventDefault();
      buttons[event.key === 'Home' ? 0 : buttons.length - 1].focus();
    } else if (event.key === 'Escape') {
      event.preventDefault();
      event.stopPropagation();
      closeMenu();
    } else if (event.key === 'Tab') {
      closeMenu({ restoreFocus: false });
    }
  };
  const onPointer = (event) => {
    if (!el.contains(event.target) && !anchor.contains(event.target)) {
      closeMenu({ restoreFocus: false });
    }
  };
  const onResize = () => closeMenu({ restoreFocus: false });
  el.addEventListener('keydown', onKey);
  document.addEventListener('pointerdown', onPointer, true);
  window.addEventListener('resize', onResize);
  open = {
    el,
    anchor,
    cleanup: () => {
      document.removeEventListener('pointerdown', onPointer, true);
      window.removeEventListener('resize', onResize);
    },
  };
  buttons[0]?.focus();
}

function place(el, anchor) {
  const a = anchor.getBoundingClientRect();
  const m = el.getBoundingClientRect();
  const vw = document.documentElement.clientWidth;
  const vh = document.documentElement.clientHeight;
  let top = a.bottom + 4;
  if (top + m.height > vh - 8 && a.top - m.height - 4 > 8) top = a.top - m.height - 4;
  let left = a.right - m.width;
  if (left < 8) left = Math.min(a.left, vw - m.width - 8);
  el.style.top = `${Math.max(8, top)}px`;
  el.style.left = `${Math.max(8, left)}px`;
}
