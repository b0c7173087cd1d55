// Anonymous connections (client.allow_anonymous): tokenless clients connect with user
// "", and only the *_for_anonymous namespace flags let them in.

import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { startHerald, newClient, newSub, closeClients, nextEvent, waitUntil, uniq } from '../lib/herald.mjs';

let node;
before(async () => {
  node = await startHerald({
    config: {
      client: { allow_anonymous: true },
      namespaces: {
        public: {
          history_size: 10,
          history_ttl: '1m',
          allow_subscribe_for_anonymous: true,
          allow_publish_for_anonymous: true,
          allow_history_for_anonymous: true,
        },
      },
    },
  });
});
afterEach(closeClients);
after(() => node?.stop());

async function anonymous() {
  const client = newClient(node, { token: '' });
  const connected = nextEvent(client, 'connected', { explain: client.explain });
  client.connect();
  await connected;
  return client;
}

test('a tokenless client connects and uses an anonymous-friendly namespace', { timeout: 10000 }, async () => {
  const client = await anonymous();
  const channel = uniq('public:x');
  const sub = newSub(client, channel);
  const subscribed = nextEvent(sub, 'subscribed', { explain: client.explain });
  sub.subscribe();
  await subscribed;
  await client.publish(channel, { from: 'anon' });
  await waitUntil(() => sub.pubs.length === 1, { what: 'own publication', explain: client.explain });
  // Anonymous is user "": empty fields are omitted on the wire (as Centrifugo does),
  // so the SDK leaves `user` undefined.
  assert.equal(sub.pubs[0].info?.user ?? '', '', client.explain());
  assert.equal(typeof sub.pubs[0].info?.client, 'string', client.explain());
  const history = await client.history(channel, { limit: 5 });
  assert.equal(history.publications.length, 1);
});

test('anonymous clients get 103 where only authenticated clients are allowed', { timeout: 10000 }, async () => {
  const client = await anonymous();
  for (const channel of [uniq('feed'), `dm:${uniq('x')}#42`]) {
    const sub = newSub(client, channel);
    const refused = nextEvent(sub, 'unsubscribed', { explain: client.explain });
    sub.subscribe();
    assert.equal((await refused).code, 103, `${channel}\n${client.explain()}`);
  }
});

test('a token still works where anonymous clients are allowed', { timeout: 10000 }, async () => {
  const client = newClient(node, { user: 'alice' });
  const sub = newSub(client, uniq('feed'));
  const subscribed = nextEvent(sub, 'subscribed', { explain: client.explain });
  client.connect();
  sub.subscribe();
  await subscribed;
});
