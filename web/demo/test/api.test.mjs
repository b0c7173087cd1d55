// The demo backend's HTTP contract: flags, identity, REST, permissions, tokens, static
// files, bad input. Against a real Herald node and the backend as a child process.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { runDemo, sleep, startDemo, startNode, verifyHs256 } from './helpers.mjs';

let node;
let demo;

before(async () => {
  node = await startNode();
  demo = await startDemo(node);
});

after(async () => {
  await demo?.stop();
  await node?.stop();
});

const SHAPE = ['id', 'name', 'owner', 'status', 'restricted', 'version', 'created_at', 'updated_at', 'updated_by'];

describe('command line', () => {
  test('bad flags: a clear message and exit 2', async () => {
    const secret = 'x'.repeat(32);
    const cases = [
      [[], /missing --herald-api, --api-key, --token-secret/],
      [['--bogus'], /unknown flag --bogus/],
      [['--herald-api', 'nope', '--api-key', 'k', '--token-secret', secret], /--herald-api: "nope" is not a URL/],
      [['--herald-api', 'http://127.0.0.1:1', '--api-key', 'k', '--token-secret', 'short'], /at least 32 bytes/],
      [['--port', 'x', '--herald-api', 'http://127.0.0.1:1', '--api-key', 'k', '--token-secret', secret], /--port/],
      [['--herald-api', 'http://127.0.0.1:1', '--api-key'], /--api-key needs a value/],
      [
        ['--herald-api', 'http://127.0.0.1:1', '--api-key', 'k', '--token-secret', secret, '--static', '/no/such/dir'],
        /--static: \/no\/such\/dir is not a directory/,
      ],
    ];
    for (const [args, says] of cases) {
      const r = await runDemo(args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, says, args.join(' '));
      assert.equal(r.stdout, '', 'nothing on stdout');
    }
    const help = await runDemo(['--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /--token-secret/);
  });

  test('prints exactly one line on stdout; SIGTERM and SIGINT exit 0', async () => {
    await demo.get('/api/outbox');
    assert.match(demo.stdout, /^demo: listening on http:\/\/127\.0\.0\.1:\d+\n$/);
    for (const signal of ['SIGTERM', 'SIGINT']) {
      const other = await startDemo(node);
      // A keep-alive connection must not hold the shutdown up.
      assert.equal((await other.get('/config.json')).status, 200);
      assert.deepEqual(await other.stop({ signal }), { code: 0, signal: null }, other.stderr);
    }
  });

  test('the environment configures it too; flags win', async () => {
    const r = await runDemo(['--port', 'nope'], {
      env: { DEMO_HERALD_API: node.url, DEMO_API_KEY: node.apiKey, DEMO_TOKEN_SECRET: node.secret },
    });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--port: "nope"/);
    assert.doesNotMatch(r.stderr, /missing/);
  });
});

describe('identity', () => {
  test('GET /login sets the cookie and redirects to /applications; /logout clears it', async () => {
    const r = await demo.get('/login?user=alice');
    assert.equal(r.status, 302);
    assert.equal(r.headers.get('location'), '/applications');
    const cookie = r.headers.get('set-cookie');
    assert.match(cookie, /^demo_user=alice;/);
    assert.match(cookie, /Path=\//);
    assert.match(cookie, /SameSite=Lax/);
    assert.match(cookie, /HttpOnly/);

    const config = await demo.get('/config.json', { headers: { Cookie: 'demo_user=alice' } });
    assert.deepEqual(config.body, {
      heraldUrl: node.wsUrl,
      user: 'alice',
      users: ['alice', 'bob', 'carol'],
      canSeeRestricted: true,
    });
    const list = await demo.get('/api/applications', { headers: { Cookie: 'other=1; demo_user=alice' } });
    assert.equal(list.status, 200);

    const out = await demo.get('/logout');
    assert.equal(out.status, 302);
    assert.match(out.headers.get('set-cookie'), /^demo_user=;.*Max-Age=0/);

    const bad = await demo.get('/login?user=mallory');
    assert.equal(bad.status, 400);
    assert.match(bad.body.error, /unknown user/);
    assert.equal((await demo.get('/login')).status, 400);

    // `next` is followed only to a path on this site, as a browser would read it.
    const here = await demo.get('/login?user=alice&next=/applications/x1');
    assert.equal(here.headers.get('location'), '/applications/x1');
    for (const next of ['//evil.example', '/%09/evil.example', '/%0a/evil.example', '/\\evil.example', 'https://evil.example', '/%5cevil.example']) {
      const away = await demo.get(`/login?user=alice&next=${next}`);
      assert.equal(away.headers.get('location'), '/applications', `next=${next}`);
    }
  });

  test('config.json without a user, and for carol', async () => {
    assert.deepEqual((await demo.get('/config.json')).body, {
      heraldUrl: node.wsUrl,
      user: null,
      users: ['alice', 'bob', 'carol'],
      canSeeRestricted: false,
    });
    const carol = await demo.get('/config.json', { user: 'carol' });
    assert.equal(carol.body.user, 'carol');
    assert.equal(carol.body.canSeeRestricted, false);
  });

  test('X-Demo-User wins over the cookie; none or unknown is 401', async () => {
    const hidden = await demo.create('bob', { name: 'header wins', restricted: true });
    const asCarol = await demo.get(`/api/applications/${hidden.id}`, {
      user: 'carol',
      headers: { Cookie: 'demo_user=alice' },
    });
    assert.equal(asCarol.status, 404, 'the header (carol) applies, not the cookie (alice)');
    const asAlice = await demo.get(`/api/applications/${hidden.id}`, { headers: { Cookie: 'demo_user=alice' } });
    assert.equal(asAlice.status, 200);

    for (const opts of [{}, { user: 'mallory' }, { user: '' }, { headers: { Cookie: 'demo_user=mallory' } }]) {
      for (const [method, p] of [
        ['GET', '/api/applications'],
        ['POST', '/api/applications'],
        ['GET', `/api/applications/${hidden.id}`],
        ['GET', '/api/herald/token'],
      ]) {
        const r = await demo.request(method, p, { ...opts, body: method === 'POST' ? { name: 'x' } : undefined });
        assert.equal(r.status, 401, `${method} ${p} ${JSON.stringify(opts)}`);
        assert.equal(typeof r.body.error, 'string');
      }
    }
  });
});

describe('REST', () => {
  test('create, get, list newest first, patch, delete', async () => {
    const a = await demo.create('bob', { name: '  Billing  ' });
    assert.deepEqual(Object.keys(a), SHAPE);
    assert.equal(a.name, 'Billing', 'names are trimmed');
    assert.equal(a.owner, 'bob');
    assert.equal(a.status, 'active');
    assert.equal(a.restricted, false);
    assert.equal(a.version, 1);
    assert.equal(a.updated_by, 'bob');
    assert.equal(a.created_at, a.updated_at);
    assert.match(a.id, /^[A-Za-z0-9_-]{1,128}$/);
    const b = await demo.create('alice', { name: 'Search', status: 'paused', restricted: true });
    assert.equal(b.status, 'paused');
    assert.equal(b.restricted, true);

    assert.deepEqual((await demo.get(`/api/applications/${a.id}`, { user: 'alice' })).body, a);
    const list = (await demo.get('/api/applications', { user: 'alice' })).body;
    assert.deepEqual(
      list.slice(0, 2).map((e) => e.id),
      [b.id, a.id],
      'newest first',
    );

    await sleep(2);
    const a2 = await demo.patch('alice', a, { name: 'Billing v2', status: 'retired' });
    assert.equal(a2.version, 2);
    assert.equal(a2.name, 'Billing v2');
    assert.equal(a2.status, 'retired');
    assert.equal(a2.owner, 'bob', 'the owner stays');
    assert.equal(a2.updated_by, 'alice');
    assert.ok(a2.updated_at > a.updated_at);
    assert.equal(a2.created_at, a.created_at);
    assert.deepEqual((await demo.get(`/api/applications/${a.id}`, { user: 'bob' })).body, a2);

    const same = await demo.patch('bob', a2, { name: 'Billing v2' });
    assert.deepEqual(same, a2, 'a patch that changes nothing makes no new version');

    const gone = await demo.remove('bob', a2);
    assert.deepEqual(gone, { id: a.id, version: 3 });
    assert.equal((await demo.get(`/api/applications/${a.id}`, { user: 'bob' })).status, 404);
    assert.equal((await demo.request('DELETE', `/api/applications/${a.id}`, { user: 'bob' })).status, 404);
    assert.equal(
      (await demo.request('PATCH', `/api/applications/${a.id}`, { user: 'bob', body: { version: 3 } })).status,
      404,
    );
    assert.ok(!(await demo.get('/api/applications', { user: 'bob' })).body.some((e) => e.id === a.id));
  });

  test('a stale PATCH gets 409 with the current entity; DELETE ?version= too', async () => {
    const e = await demo.create('alice', { name: 'Conflicts' });
    const bobs = await demo.patch('bob', e, { name: 'Conflicts (bob)' });
    const r = await demo.request('PATCH', `/api/applications/${e.id}`, {
      user: 'alice',
      body: { version: 1, name: 'Conflicts (alice)' },
    });
    assert.equal(r.status, 409);
    assert.match(r.body.error, /stale/);
    assert.deepEqual(r.body.current, bobs);
    assert.equal((await demo.get(`/api/applications/${e.id}`, { user: 'alice' })).body.name, 'Conflicts (bob)');

    const del = await demo.request('DELETE', `/api/applications/${e.id}?version=1`, { user: 'alice' });
    assert.equal(del.status, 409);
    assert.deepEqual(del.body.current, bobs);
    assert.equal((await demo.request('DELETE', `/api/applications/${e.id}?version=x`, { user: 'alice' })).status, 400);
    assert.deepEqual(
      (await demo.request('DELETE', `/api/applications/${e.id}?version=2`, { user: 'alice' })).body,
      { id: e.id, version: 3 },
    );
  });

  test('validation: 400 with a reason', async () => {
    const e = await demo.create('bob', { name: 'Valid' });
    const creates = [
      [{}, /name is required/],
      [{ name: '' }, /name must be 1–100/],
      [{ name: '   ' }, /name must be 1–100/],
      [{ name: 'x'.repeat(101) }, /name must be 1–100/],
      [{ name: 42 }, /name must be a string/],
      [{ name: 'x', status: 'gone' }, /status must be one of active, paused, retired/],
      [{ name: 'x', restricted: 'yes' }, /restricted must be true or false/],
      [{ name: 'x', owner: 'carol' }, /unknown field "owner"/],
      [[], /JSON object/],
      ['x', /JSON object/],
      [null, /JSON object/],
    ];
    for (const [body, says] of creates) {
      const r = await demo.request('POST', '/api/applications', { user: 'bob', body });
      assert.equal(r.status, 400, JSON.stringify(body));
      assert.match(r.body.error, says, JSON.stringify(body));
    }
    assert.equal((await demo.create('bob', { name: 'x'.repeat(100) })).name.length, 100);
    assert.equal((await demo.create('bob', { name: '😀'.repeat(100) })).name, '😀'.repeat(100));

    const patches = [
      [{ name: 'no version' }, /version is required/],
      [{ version: '1' }, /version must be a positive integer/],
      [{ version: 0 }, /version must be a positive integer/],
      [{ version: 1.5 }, /version must be a positive integer/],
      [{ version: 1, status: 'x' }, /status must be one of/],
      [{ version: 1, id: 'other' }, /unknown field "id"/],
    ];
    for (const [body, says] of patches) {
      const r = await demo.request('PATCH', `/api/applications/${e.id}`, { user: 'bob', body });
      assert.equal(r.status, 400, JSON.stringify(body));
      assert.match(r.body.error, says, JSON.stringify(body));
    }
    assert.deepEqual((await demo.get(`/api/applications/${e.id}`, { user: 'bob' })).body, e, 'unchanged');
  });

  test('malformed bodies are 400 and never crash the server', async () => {
    const e = await demo.create('bob', { name: 'Malformed' });
    for (const raw of ['{', '{"name": "x",}', 'not json', '', '\u0000', '{"name": "\ud800"']) {
      for (const [method, p] of [
        ['POST', '/api/applications'],
        ['PATCH', `/api/applications/${e.id}`],
      ]) {
        const r = await demo.request(method, p, { user: 'bob', raw });
        assert.equal(r.status, 400, `${method} ${JSON.stringify(raw)}: ${r.text}`);
        assert.equal(typeof r.body.error, 'string');
      }
    }
    const huge = await demo.request('POST', '/api/applications', {
      user: 'bob',
      raw: JSON.stringify({ name: 'x'.repeat(200_000) }),
    });
    assert.equal(huge.status, 413);
    // Odd paths and methods.
    assert.equal((await demo.get('/api/applications/%E0%A4%A')).status, 404);
    assert.equal((await demo.get('/api/nothing', { user: 'bob' })).status, 404);
    assert.equal((await demo.get('/api/nothing', { user: 'bob' })).body.error.length > 0, true);
    const put = await demo.request('PUT', '/api/applications', { user: 'bob', body: {} });
    assert.equal(put.status, 405);
    assert.equal(put.headers.get('allow'), 'GET, POST');

    assert.equal(demo.exitInfo, null, 'still running');
    assert.equal((await demo.get(`/api/applications/${e.id}`, { user: 'bob' })).status, 200);
    assert.doesNotMatch(demo.stderr, /error:/, 'no internal errors');
  });
});

describe('carol never sees restricted applications', () => {
  test('not in the list, not by id, cannot patch, delete, create or make one restricted', async () => {
    const secret = await demo.create('alice', { name: 'Secret', restricted: true });
    const open = await demo.create('bob', { name: 'Open' });

    const carolList = (await demo.get('/api/applications', { user: 'carol' })).body;
    assert.ok(carolList.length > 0);
    assert.ok(carolList.every((e) => e.restricted === false), 'only public ones');
    assert.ok(carolList.some((e) => e.id === open.id));
    assert.ok(!carolList.some((e) => e.id === secret.id));
    assert.ok((await demo.get('/api/applications', { user: 'bob' })).body.some((e) => e.id === secret.id));

    const get = await demo.get(`/api/applications/${secret.id}`, { user: 'carol' });
    assert.equal(get.status, 404);
    assert.doesNotMatch(get.text, /Secret/);
    const patch = await demo.request('PATCH', `/api/applications/${secret.id}`, {
      user: 'carol',
      body: { version: 1, name: 'mine now' },
    });
    assert.equal(patch.status, 404, 'not 409: a stale version would reveal it');
    const stale = await demo.request('PATCH', `/api/applications/${secret.id}`, {
      user: 'carol',
      body: { version: 7, name: 'mine now' },
    });
    assert.equal(stale.status, 404);
    assert.equal(stale.body.current, undefined);
    assert.equal((await demo.request('DELETE', `/api/applications/${secret.id}`, { user: 'carol' })).status, 404);

    const create = await demo.request('POST', '/api/applications', {
      user: 'carol',
      body: { name: 'Mine', restricted: true },
    });
    assert.equal(create.status, 403);
    const hide = await demo.request('PATCH', `/api/applications/${open.id}`, {
      user: 'carol',
      body: { version: 1, restricted: true },
    });
    assert.equal(hide.status, 403);

    // What carol may do.
    const mine = await demo.create('carol', { name: 'Mine', restricted: false });
    assert.equal(mine.owner, 'carol');
    const edited = await demo.patch('carol', open, { status: 'paused' });
    assert.equal(edited.version, 2);
    // Once bob makes it restricted, it is gone for carol.
    await demo.patch('bob', edited, { restricted: true });
    assert.equal((await demo.get(`/api/applications/${open.id}`, { user: 'carol' })).status, 404);
    assert.equal((await demo.get(`/api/applications/${secret.id}`, { user: 'alice' })).body.name, 'Secret');
  });
});

describe('Herald tokens', () => {
  test('connection tokens: HS256 with the secret, {sub, exp}', async () => {
    for (const user of ['alice', 'bob', 'carol']) {
      const r = await demo.get('/api/herald/token', { user });
      assert.equal(r.status, 200);
      assert.match(r.headers.get('content-type'), /^text\/plain/);
      const { header, claims } = verifyHs256(r.text, node.secret);
      assert.deepEqual(header, { alg: 'HS256', typ: 'JWT' });
      assert.deepEqual(Object.keys(claims).sort(), ['exp', 'sub']);
      assert.equal(claims.sub, user);
      const left = claims.exp - Date.now() / 1000;
      assert.ok(left > 3590 && left <= 3600, `exp in an hour (${left})`);
      assert.throws(() => verifyHs256(r.text, 'y'.repeat(64)), /bad signature/);
    }
  });

  test('subscription tokens: only alice and bob, only $entities: channels', async () => {
    for (const user of ['alice', 'bob']) {
      const channel = '$entities:applications';
      const r = await demo.get(`/api/herald/subscription-token?channel=${encodeURIComponent(channel)}`, { user });
      assert.equal(r.status, 200);
      const { claims } = verifyHs256(r.text, node.secret);
      assert.deepEqual(Object.keys(claims).sort(), ['channel', 'exp', 'sub']);
      assert.equal(claims.sub, user);
      assert.equal(claims.channel, channel);
      assert.ok(claims.exp - Date.now() / 1000 > 3590);
    }
    for (const [user, channel, status] of [
      ['carol', '$entities:applications', 403],
      ['carol', '$entities:all', 403],
      ['alice', 'entities:applications', 403],
      ['alice', '$private:x', 403],
      ['alice', '', 400],
    ]) {
      const r = await demo.get(`/api/herald/subscription-token?channel=${encodeURIComponent(channel)}`, { user });
      assert.equal(r.status, status, `${user} ${channel}`);
      assert.equal(typeof r.body.error, 'string');
    }
    assert.equal((await demo.get('/api/herald/subscription-token?channel=%24entities%3Aall')).status, 401);
  });

  test('who edits an application: a token for its $editing channel to whoever may see it', async () => {
    const open = await demo.create('bob', { name: 'editing-open' });
    const secret = await demo.create('bob', { name: 'editing-secret', restricted: true });
    const token = (user, id) => demo.get(`/api/herald/subscription-token?channel=${encodeURIComponent(`$editing:applications.${id}`)}`, { user });
    for (const user of ['alice', 'bob', 'carol']) {
      const r = await token(user, open.id);
      assert.equal(r.status, 200, user);
      assert.equal(verifyHs256(r.text, node.secret).claims.channel, `$editing:applications.${open.id}`);
    }
    assert.equal((await token('alice', secret.id)).status, 200);
    assert.equal((await token('carol', secret.id)).status, 403, 'carol may not learn who edits a restricted application');
    assert.equal((await token('alice', 'no-such-id')).status, 403);
  });
});

describe('static files', () => {
  test('without --static, / says the frontend is not built', async () => {
    const r = await demo.get('/', { headers: { Accept: 'text/html' } });
    assert.equal(r.status, 200);
    assert.match(r.text, /frontend is not built/);
  });

  test('with --static: files, the SPA fallback, never outside DIR, never for /api/', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'demo-static-'));
    fs.mkdirSync(path.join(dir, 'assets'));
    fs.writeFileSync(path.join(dir, 'index.html'), '<!doctype html><div id="root"></div>');
    fs.writeFileSync(path.join(dir, 'assets', 'app-1234.js'), 'console.log(1)');
    const web = await startDemo(node, { args: ['--static', dir] });
    try {
      const html = { Accept: 'text/html,application/xhtml+xml,*/*;q=0.8' };
      const index = await web.get('/', { headers: html });
      assert.equal(index.status, 200);
      assert.match(index.headers.get('content-type'), /^text\/html/);
      assert.match(index.text, /id="root"/);
      for (const p of ['/applications', '/applications/abc/edit', '/applications/abc']) {
        const r = await web.get(p, { headers: html });
        assert.equal(r.status, 200, p);
        assert.match(r.text, /id="root"/, p);
      }
      const js = await web.get('/assets/app-1234.js');
      assert.equal(js.status, 200);
      assert.match(js.headers.get('content-type'), /^text\/javascript/);
      assert.match(js.headers.get('cache-control'), /immutable/);
      assert.equal(js.text, 'console.log(1)');
      assert.equal((await web.get('/assets/missing.js')).status, 404, 'no HTML for a missing asset');
      const api = await web.get('/api/nothing', { headers: html, user: 'bob' });
      assert.equal(api.status, 404);
      assert.equal(typeof api.body.error, 'string', 'the API answers JSON, not index.html');
      for (const p of ['/../package.json', '/%2e%2e/package.json', '/assets/..%2f..%2fpackage.json']) {
        const r = await web.get(p);
        assert.equal(r.status, 404, p);
      }
    } finally {
      await web.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('--db FILE', () => {
  test('a database file persists applications and the outbox across restarts', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'demo-db-'));
    const file = path.join(dir, 'demo.sqlite');
    try {
      const first = await startDemo(node, { args: ['--db', file] });
      const e = await first.create('bob', { name: 'Persistent' });
      await first.drained();
      assert.equal((await first.stop()).code, 0);
      const second = await startDemo(node, { args: ['--db', file] });
      try {
        assert.deepEqual((await second.get(`/api/applications/${e.id}`, { user: 'bob' })).body, e);
        assert.deepEqual(await second.outbox(), { pending: 0, sent: 1 });
      } finally {
        await second.stop();
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
