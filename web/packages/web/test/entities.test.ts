import { describe, expect, it } from 'vitest';
import { applyEntityEvent, asEntityEvent, entityChannel, type EntityEvent } from '../src/entities.js';

interface App {
  id: string;
  name: string;
  version: number;
}

const ev = (action: EntityEvent['action'], id: string, version: number, name = `n${version}`): EntityEvent<App> => ({
  entity_type: 'applications',
  entity_id: id,
  action,
  actor: 'bob',
  version,
  timestamp: 1,
  payload: action === 'deleted' ? null : { id, name, version },
});

describe('entityChannel', () => {
  it('names the three scopes, in two audiences', () => {
    expect(entityChannel({})).toBe('entities:all');
    expect(entityChannel({ type: 'applications' })).toBe('entities:applications');
    expect(entityChannel({ type: 'applications', id: 'a-1' })).toBe('entities:applications.a-1');
    expect(entityChannel({ type: 'applications', id: '7' }, 'restricted')).toBe('$entities:applications.7');
    expect(entityChannel({}, 'restricted')).toBe('$entities:all');
  });

  it('refuses names that would break the channel', () => {
    for (const type of ['', 'all', 'Apps', 'a:b', 'a.b', 'a b', '$x', 'x'.repeat(65)]) expect(entityChannel({ type })).toBeNull();
    for (const id of ['', 'a.b', 'a:b', 'a#b', 'a b', 'x'.repeat(129)]) expect(entityChannel({ type: 't', id })).toBeNull();
  });
});

describe('asEntityEvent', () => {
  it('accepts a well-formed event and defaults the actor', () => {
    const e = asEntityEvent({ entity_type: 't', entity_id: '1', action: 'created', version: 1, timestamp: 5, payload: {} });
    expect(e).toMatchObject({ entity_type: 't', entity_id: '1', action: 'created', actor: '' });
  });

  it('rejects junk', () => {
    const good = { entity_type: 't', entity_id: '1', action: 'created', version: 1, timestamp: 5, actor: 'a' };
    for (const bad of [
      null,
      'x',
      { ...good, entity_type: 'T' },
      { ...good, entity_id: 'a.b' },
      { ...good, action: 'moved' },
      { ...good, version: -1 },
      { ...good, version: 1.5 },
      { ...good, timestamp: 'now' },
      { ...good, actor: 7 },
    ]) {
      expect(asEntityEvent(bad)).toBeNull();
    }
  });
});

describe('applyEntityEvent', () => {
  const list: App[] = [{ id: '1', name: 'a', version: 1 }];

  it('adds a created entity at the front, or where compare sorts it', () => {
    expect(applyEntityEvent(list, ev('created', '2', 1)).map((a) => a.id)).toEqual(['2', '1']);
    const byName = (a: App, b: App) => a.name.localeCompare(b.name);
    expect(applyEntityEvent(list, ev('created', '0', 1, 'z'), byName).map((a) => a.name)).toEqual(['a', 'z']);
  });

  it('replaces an entity with a newer version in place', () => {
    const two = applyEntityEvent(list, ev('created', '2', 1));
    const out = applyEntityEvent(two, ev('updated', '1', 2, 'b'));
    expect(out).toEqual([{ id: '2', name: 'n1', version: 1 }, { id: '1', name: 'b', version: 2 }]);
  });

  it('ignores events not newer than what it holds, returning the same list', () => {
    expect(applyEntityEvent(list, ev('updated', '1', 1, 'old'))).toBe(list);
    expect(applyEntityEvent(list, ev('deleted', '1', 1))).toBe(list);
  });

  it('removes a deleted entity; deleting an unknown one changes nothing', () => {
    expect(applyEntityEvent(list, ev('deleted', '1', 2))).toEqual([]);
    expect(applyEntityEvent(list, ev('deleted', '9', 2))).toBe(list);
  });

  it('an update for an entity not in the list adds it (it was created before the list loaded)', () => {
    expect(applyEntityEvent(list, ev('updated', '5', 3)).map((a) => a.id)).toEqual(['5', '1']);
  });

  it('matches numeric ids by their string form', () => {
    const nums = [{ id: 1, name: 'a', version: 1 }];
    expect(applyEntityEvent(nums, { ...ev('deleted', '1', 2) } as unknown as EntityEvent<(typeof nums)[0]>)).toEqual([]);
  });
});
