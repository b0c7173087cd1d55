// The adapters are plain functions over `herald.subscribe`: a stand-in client that hands
// publications to the subscriber exercises them completely.
import { describe, expect, it } from 'vitest';
import type { EntityEvent, Herald, Publication, SubscribeOptions } from '@herald/web';
import { entityEventsMiddleware, syncQueryClient, type QueryClientLike } from '../src/adapters.js';

interface App {
  id: string;
  name: string;
  version: number;
}

/** A client with only `subscribe`, whose channels the test drives. */
function standIn() {
  const subs = new Map<string, { fn: (p: Publication) => void; opts: SubscribeOptions }>();
  const herald = {
    subscribe(channel: string, fn: (p: Publication) => void, opts: SubscribeOptions = {}) {
      subs.set(channel, { fn, opts });
      return () => void subs.delete(channel);
    },
  } as unknown as Herald;
  const deliver = (channel: string, data: unknown) => subs.get(channel)?.fn({ channel, data });
  const resync = (channel: string) => subs.get(channel)?.opts.onResync?.({ channel, reason: 'history-trimmed', from: null, to: null });
  return { herald, subs, deliver, resync };
}

const event = (action: EntityEvent['action'], id: string, version: number, name = `v${version}`): EntityEvent<App> => ({
  entity_type: 'applications',
  entity_id: id,
  action,
  actor: 'bob',
  version,
  timestamp: 1,
  payload: action === 'deleted' ? null : { id, name, version },
});

class Cache implements QueryClientLike {
  data = new Map<string, unknown>();
  invalidated: string[] = [];
  setQueryData(key: readonly unknown[], updater: (old: unknown) => unknown) {
    const k = JSON.stringify(key);
    this.data.set(k, updater(this.data.get(k)));
  }
  invalidateQueries({ queryKey }: { queryKey: readonly unknown[] }) {
    this.invalidated.push(JSON.stringify(queryKey));
  }
  get(key: readonly unknown[]) {
    return this.data.get(JSON.stringify(key));
  }
}

describe('syncQueryClient', () => {
  it('patches the list and the entity caches, invalidates on resync, and stops', () => {
    const { herald, subs, deliver, resync } = standIn();
    const cache = new Cache();
    cache.setQueryData(['apps'], () => [{ id: '1', name: 'a', version: 1 }]);
    cache.setQueryData(['app', '1'], () => ({ id: '1', name: 'a', version: 1 }));
    const stop = syncQueryClient<App>(herald, cache, { type: 'applications', listKey: ['apps'], entityKey: (id) => ['app', id] });
    expect([...subs.keys()]).toEqual(['entities:applications']);

    deliver('entities:applications', event('updated', '1', 2, 'b'));
    deliver('entities:applications', event('created', '2', 1));
    expect(cache.get(['apps'])).toEqual([{ id: '2', name: 'v1', version: 1 }, { id: '1', name: 'b', version: 2 }]);
    expect(cache.get(['app', '1'])).toEqual({ id: '1', name: 'b', version: 2 });
    // Older than the cache: nothing changes.
    deliver('entities:applications', event('updated', '1', 1, 'old'));
    expect(cache.get(['app', '1'])).toEqual({ id: '1', name: 'b', version: 2 });
    deliver('entities:applications', event('deleted', '2', 2));
    expect(cache.get(['apps'])).toEqual([{ id: '1', name: 'b', version: 2 }]);
    expect(cache.get(['app', '2'])).toBeNull();
    // Not an entity event: ignored.
    deliver('entities:applications', { hello: 1 });
    expect(cache.get(['apps'])).toHaveLength(1);

    resync('entities:applications');
    expect(cache.invalidated).toEqual([JSON.stringify(['apps']), JSON.stringify(['app'])]);
    stop();
    expect(subs.size).toBe(0);
  });

  it('a list not loaded yet is invalidated instead of patched', () => {
    const { herald, deliver } = standIn();
    const cache = new Cache();
    syncQueryClient<App>(herald, cache, { type: 'applications', listKey: ['apps'] });
    deliver('entities:applications', event('created', '1', 1));
    expect(cache.get(['apps'])).toBeUndefined();
    expect(cache.invalidated).toEqual([JSON.stringify(['apps'])]);
  });

  it('uses the restricted audience when asked, and does nothing for a malformed type', () => {
    const { herald, subs } = standIn();
    syncQueryClient(herald, new Cache(), { type: 'applications', audience: 'restricted', listKey: ['x'] });
    expect([...subs.keys()]).toEqual(['$entities:applications']);
    const stop = syncQueryClient(herald, new Cache(), { type: 'Not Valid', listKey: ['y'] });
    expect(subs.size).toBe(1);
    stop();
  });
});

describe('entityEventsMiddleware', () => {
  it('dispatches entity events and resyncs of its scopes, passes actions on, and stops', () => {
    const { herald, subs, deliver, resync } = standIn();
    const dispatched: unknown[] = [];
    const { middleware, stop } = entityEventsMiddleware(herald, [{ type: 'applications' }, { type: 'applications', id: '7', audience: 'restricted' }]);
    const next = (a: unknown) => ({ passed: a });
    const chain = middleware({ dispatch: (a) => dispatched.push(a) })(next);
    expect([...subs.keys()]).toEqual(['entities:applications', '$entities:applications.7']);
    expect(chain({ type: 'other' })).toEqual({ passed: { type: 'other' } });

    const e = event('updated', '7', 3);
    deliver('$entities:applications.7', e);
    deliver('entities:applications', 'not an event');
    resync('entities:applications');
    expect(dispatched).toEqual([
      { type: 'herald/entityEvent', payload: { ...e } },
      { type: 'herald/entityResync', payload: { channel: 'entities:applications' } },
    ]);
    stop();
    expect(subs.size).toBe(0);
  });
});
