// Inline SVG icons (stroked with currentColor, sized by style.css): emoji or
// symbol characters render as empty boxes on systems without an emoji font.

const NS = 'http://www.w3.org/2000/svg';

// 20×20 outlines, one or more path strings each.
const PATHS = {
  smile: ['M10 2.5a7.5 7.5 0 1 0 0 15a7.5 7.5 0 1 0 0-15z', 'M6.8 11.8c.8 1.2 1.9 1.8 3.2 1.8s2.4-.6 3.2-1.8', 'M7.5 8h.01M12.5 8h.01'],
  'smile-plus': ['M16.8 8.6a7 7 0 1 1-5.4-5.6', 'M6.8 11.8c.8 1.2 1.9 1.8 3.2 1.8s2.4-.6 3.2-1.8', 'M7.3 8h.01M11.8 8h.01', 'M16 1.5v5M13.5 4h5'],
  edit: ['M13.5 3.5l3 3L7 16H4v-3z', 'M11.5 5.5l3 3'],
  trash: ['M3.5 5.5h13', 'M8 5.5V3.5h4v2', 'M5 5.5l1 11h8l1-11', 'M8.5 8.5v5M11.5 8.5v5'],
  reply: ['M3.5 4.5h13v9h-7l-4 3v-3h-2z', 'M7 8h6M7 10.5h4'],
  users: ['M7 7a3 3 0 1 0 0 .01z', 'M1.5 17c.5-3 2.7-5 5.5-5s5 2 5.5 5', 'M14 6a2.5 2.5 0 1 0 0 .01z', 'M13.5 11c2.5 0 4.5 1.7 5 4.5'],
  mail: ['M2.5 4.5h15v11h-15z', 'M2.5 5l7.5 6l7.5-6'],
  lock: ['M5 9h10v8H5z', 'M7 9V6.5a3 3 0 0 1 6 0V9'],
  remove: ['M8 6a3 3 0 1 0 0 .01z', 'M2.5 17c.5-3 2.7-5 5.5-5s5 2 5.5 5', 'M13.5 8.5h5'],
  ban: ['M10 2.5a7.5 7.5 0 1 0 0 15a7.5 7.5 0 1 0 0-15z', 'M4.7 4.7l10.6 10.6'],
  bell: ['M5 14V9a5 5 0 0 1 10 0v5l1.5 1.5h-13z', 'M8 17.5a2 2 0 0 0 4 0'],
  settings: ['M10 7a3 3 0 1 0 0 6a3 3 0 1 0 0-6z', 'M10 1.8v2.4M10 15.8v2.4M1.8 10h2.4M15.8 10h2.4M4.2 4.2l1.7 1.7M14.1 14.1l1.7 1.7M4.2 15.8l1.7-1.7M14.1 5.9l1.7-1.7'],
};

/** An `<svg>` for `name`, hidden from assistive technology (the button carries the name). */
export function icon(name) {
  const svg = document.createElementNS(NS, 'svg');
  svg.setAttribute('viewBox', '0 0 20 20');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('focusable', 'false');
  svg.setAttribute('class', `icon icon-${name}`);
  for (const d of PATHS[name]) {
    const path = document.createElementNS(NS, 'path');
    path.setAttribute('d', d);
    svg.append(path);
  }
  return svg;
}
