// Unit tests of the web client's Markdown renderer (src/parley/web/js/markdown.js).
// Run with `node --test tests/e2e/js/` (pytest runs them: tests/e2e/test_web_js.py).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const here = fileURLToPath(new URL('.', import.meta.url));
const md = await import(new URL('../../../src/parley/web/js/markdown.js', import.meta.url));
const { escapeHtml, isEmojiOnly, plainText, renderMarkdown, safeUrl } = md;
void here;

const OPEN_A = /^<a href="([^"<>]*)" rel="noopener noreferrer" target="_blank">$/;
const SIMPLE = /^<(\/?)(p|strong|em|del|code|pre|blockquote|a)>$|^<br>$/;

function decode(text) {
  return text
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&quot;/g, '"')
    .replace(/&#39;/g, "'")
    .replace(/&amp;/g, '&');
}

/** Check that html uses only the allowed tags, properly nested, with safe hrefs. */
function assertSafe(html, source) {
  const stack = [];
  const tags = html.match(/<[^>]*>/g) || [];
  for (const tag of tags) {
    const link = OPEN_A.exec(tag);
    if (link) {
      const href = decode(link[1]);
      assert.match(href, /^(https?:\/\/|mailto:)/i, `unsafe href ${href} from ${JSON.stringify(source)}`);
      stack.push('a');
      continue;
    }
    const simple = SIMPLE.exec(tag);
    assert.ok(simple, `unexpected tag ${tag} from ${JSON.stringify(source)}`);
    if (tag === '<br>') continue;
    const [, closing, name] = simple;
    if (!closing) assert.notEqual(name, 'a', `bare <a> from ${JSON.stringify(source)}`);
    if (closing) assert.equal(stack.pop(), name, `misnested </${name}> in ${html}`);
    else stack.push(name);
  }
  assert.deepEqual(stack, [], `unclosed tags in ${html}`);
  const text = html.replace(/<[^>]*>/g, '');
  assert.ok(!/[<>"]/.test(text), `raw markup character outside tags in ${html}`);
  assert.ok(!/\u0000/.test(html), 'placeholder leaked');
}

test('escapes the HTML-significant characters', () => {
  assert.equal(escapeHtml(`<a href="x" title='y'>&</a>`), '&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;&lt;/a&gt;');
});

test('plain text comes back unchanged once decoded', () => {
  const source = 'Tom & Jerry say "hi" <3 it\'s 5 > 4';
  const html = renderMarkdown(source);
  assert.equal(decode(html.replace(/<[^>]*>/g, '')), source);
  assertSafe(html, source);
});

test('the subset: emphasis, strike, code, blocks, quotes, line breaks', () => {
  assert.equal(renderMarkdown('**b** *i* _u_ ~~s~~'), '<p><strong>b</strong> <em>i</em> <em>u</em> <del>s</del></p>');
  assert.equal(renderMarkdown('`a <b> *c*`'), '<p><code>a &lt;b&gt; *c*</code></p>');
  assert.equal(renderMarkdown('```\n<x>\n  **y**\n```'), '<pre><code>&lt;x&gt;\n  **y**</code></pre>');
  assert.equal(renderMarkdown('> quoted\n> more\nafter'), '<blockquote><p>quoted<br>more</p></blockquote><p>after</p>');
  assert.equal(renderMarkdown('one\ntwo\n\nthree'), '<p>one<br>two</p><p>three</p>');
  assert.equal(renderMarkdown('snake_case_name and 2*3*4'), '<p>snake_case_name and 2*3*4</p>');
});

test('links: http, https and mailto only, opened safely', () => {
  assert.equal(
    renderMarkdown('[site](https://example.com/a?b=1&c=2)'),
    '<p><a href="https://example.com/a?b=1&amp;c=2" rel="noopener noreferrer" target="_blank">site</a></p>',
  );
  assert.equal(
    renderMarkdown('see https://example.com/x_y_z.'),
    '<p>see <a href="https://example.com/x_y_z" rel="noopener noreferrer" target="_blank">https://example.com/x_y_z</a>.</p>',
  );
  assert.match(renderMarkdown('[m](mailto:a@example.com)'), /href="mailto:a@example.com"/);
  for (const bad of [
    '[x](javascript:alert(1))',
    '[x](JaVaScRiPt:alert(1))',
    '[x](data:text/html;base64,PHNjcmlwdD4=)',
    '[x](vbscript:msgbox)',
    '[x](//evil.example/)',
    '[x](java\tscript:alert(1))',
    'javascript:alert(1)',
    '[x](https:alert(1))',
  ]) {
    const html = renderMarkdown(bad);
    assert.ok(!html.includes('<a '), `${bad} became a link: ${html}`);
    assertSafe(html, bad);
  }
  assert.equal(safeUrl(' http://a.b '), 'http://a.b');
  assert.equal(safeUrl('http://a b'), null);
});

test('hostile bodies stay inert', () => {
  const hostile = [
    '<img src=x onerror=alert(1)>',
    '<script>alert(1)</script>',
    '"><svg onload=alert(1)>',
    "[a](https://x.example/\" onmouseover=\"alert(1))",
    '[<img src=x onerror=alert(1)>](https://x.example)',
    '**<b>**',
    '`</code><script>`',
    '```\n</code></pre><script>alert(1)</script>\n```',
    '> <iframe src="javascript:alert(1)">',
    'https://x.example/"><script>alert(1)</script>',
    '[x](https://x.example/a)(b)<a href="javascript:alert(1)">y</a>',
    '\u0000 0 \u0000',
    '&lt;script&gt; &amp;amp; &#60;b&#62;',
  ];
  for (const body of hostile) {
    const html = renderMarkdown(body);
    assertSafe(html, body);
    assert.ok(!/<(img|script|svg|iframe)/i.test(html), html);
    assert.ok(!/\son\w+=/i.test(html.replace(/&[^;]+;/g, '').match(/<[^>]*>/g)?.join('') || ''), html);
  }
});

test('random inputs always give well-formed, allow-listed markup', () => {
  const pieces = ['*', '**', '_', '~~', '`', '```', '\n', '> ', '[', ']', '(', ')', '<', '>', '"', "'", '&',
    'a', 'b ', ' ', 'http://x.y/', 'https://e.x/p_q', 'javascript:', 'mailto:m@x.y', '\u0000', '&amp;', '\t', 'é', '😀'];
  let seed = 12345;
  const rand = (n) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  for (let i = 0; i < 3000; i++) {
    let s = '';
    const len = rand(40);
    for (let j = 0; j < len; j++) s += pieces[rand(pieces.length)];
    assertSafe(renderMarkdown(s), s);
  }
});

test('pathological 16 KiB bodies render quickly', () => {
  const size = 16_384;
  const bodies = [
    '**a'.repeat(size / 3),
    '*a '.repeat(size / 3),
    '_a '.repeat(size / 3),
    '~~a'.repeat(size / 3),
    '['.repeat(size),
    '[a]('.repeat(size / 4),
    'http://'.repeat(size / 7),
    '`'.repeat(size),
    '> '.repeat(size / 2),
    'x'.repeat(size),
    '\n'.repeat(size),
  ];
  for (const body of bodies) {
    const started = performance.now();
    const html = renderMarkdown(body);
    const ms = performance.now() - started;
    assert.ok(ms < 500, `${JSON.stringify(body.slice(0, 12))}… took ${ms.toFixed(0)} ms`);
    assertSafe(html, body.slice(0, 40));
  }
});

test('emoji-only bodies and plain previews', () => {
  assert.ok(isEmojiOnly('🎉'));
  assert.ok(isEmojiOnly('👍🏽 ❤️'));
  assert.ok(!isEmojiOnly('ok 👍'));
  assert.ok(!isEmojiOnly('123'));
  assert.equal(plainText('**hi** [there](https://x.y) `c`'), 'hi there c');
  assert.equal(plainText('x'.repeat(200), 10).length, 10);
});
