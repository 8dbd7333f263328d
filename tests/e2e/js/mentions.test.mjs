// Unit tests of mention highlighting in the Markdown renderer (markdown.js): only
// the names the server found, never inside code, links or e-mail addresses.
// Run with `node --test tests/e2e/js/` (pytest runs them: tests/e2e/test_web_js.py).

import assert from 'node:assert/strict';
import { test } from 'node:test';

const { renderMarkdown } = await import(new URL('../../../src/parley/web/js/markdown.js', import.meta.url));

const found = (names, me = 'alice') => ({ names: new Set(names), me });

test('the names the server found are highlighted, mine apart', () => {
  assert.equal(
    renderMarkdown('hi @bob and @Alice.', found(['bob', 'alice'])),
    '<p>hi <span class="mention">@bob</span> and <span class="mention me">@Alice</span>.</p>',
  );
  assert.equal(renderMarkdown('@room now', found(['room'])), '<p><span class="mention me">@room</span> now</p>');
});

test('other names, code, links and addresses stay plain', () => {
  const names = found(['bob']);
  assert.equal(renderMarkdown('@carol', names), '<p>@carol</p>');
  assert.equal(renderMarkdown('`@bob`', names), '<p><code>@bob</code></p>');
  assert.equal(renderMarkdown('```\n@bob\n```', names), '<pre><code>@bob</code></pre>');
  assert.equal(renderMarkdown('x@bob.org', names), '<p>x@bob.org</p>');
  assert.match(renderMarkdown('https://example.org/@bob', names), /^<p><a href="https:\/\/example.org\/@bob"/);
  assert.equal(renderMarkdown('@bobby', names), '<p>@bobby</p>');
});

test('a highlighted name is escaped like everything else', () => {
  assert.equal(renderMarkdown('**@bob** <b>', found(['bob'])), '<p><strong><span class="mention">@bob</span></strong> &lt;b&gt;</p>');
  assert.equal(renderMarkdown('@bob', null), '<p>@bob</p>');
});
