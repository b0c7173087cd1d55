import { describe, expect, it } from 'vitest';
import { RefCount } from '../src/refcount.js';

describe('RefCount', () => {
  it('the first add of a key is fresh, later ones are not', () => {
    const rc = new RefCount<string, string>();
    expect(rc.add('ch', 'a')).toBe(true);
    expect(rc.add('ch', 'b')).toBe(false);
    expect(rc.add('ch', 'a')).toBe(false); // the same holder again
    expect(rc.add('other', 'a')).toBe(true);
    expect(rc.size).toBe(2);
    expect([...rc.get('ch')].sort()).toEqual(['a', 'b']);
  });

  it('only the last remove releases the key', () => {
    const rc = new RefCount<string, number>();
    rc.add('ch', 1);
    rc.add('ch', 2);
    rc.add('ch', 3);
    expect(rc.remove('ch', 2)).toBe(false);
    expect(rc.remove('ch', 1)).toBe(false);
    expect(rc.has('ch')).toBe(true);
    expect(rc.remove('ch', 3)).toBe(true);
    expect(rc.has('ch')).toBe(false);
    expect(rc.size).toBe(0);
    expect(rc.keys()).toEqual([]);
  });

  it('removing a holder twice is harmless (StrictMode double effects)', () => {
    const rc = new RefCount<string, object>();
    const h1 = {};
    const h2 = {};
    rc.add('ch', h1);
    rc.add('ch', h2);
    expect(rc.remove('ch', h1)).toBe(false);
    expect(rc.remove('ch', h1)).toBe(false);
    expect(rc.has('ch')).toBe(true);
    expect(rc.remove('ch', h2)).toBe(true);
    expect(rc.remove('ch', h2)).toBe(false);
    expect(rc.remove('ch', h1)).toBe(false);
  });

  it('mount, unmount, mount again (StrictMode) subscribes twice and ends held', () => {
    const rc = new RefCount<string, object>();
    const h = {};
    const events: string[] = [];
    const mount = () => rc.add('ch', h) && events.push('subscribe');
    const unmount = () => rc.remove('ch', h) && events.push('unsubscribe');
    mount();
    unmount();
    mount();
    expect(events).toEqual(['subscribe', 'unsubscribe', 'subscribe']);
    expect(rc.has('ch')).toBe(true);
  });

  it('removing from an unknown key or an unknown holder does nothing', () => {
    const rc = new RefCount<string, string>();
    expect(rc.remove('nope', 'a')).toBe(false);
    rc.add('ch', 'a');
    expect(rc.remove('ch', 'zzz')).toBe(false);
    expect(rc.has('ch')).toBe(true);
    expect(rc.get('nope').size).toBe(0);
  });

  it('keys lists every held key', () => {
    const rc = new RefCount<string, string>();
    rc.add('a', 'x');
    rc.add('b', 'x');
    rc.add('c', 'y');
    rc.remove('b', 'x');
    expect(rc.keys().sort()).toEqual(['a', 'c']);
  });
});
