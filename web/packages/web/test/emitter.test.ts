import { describe, expect, it, vi } from 'vitest';
import { Emitter, Store, safely } from '../src/emitter.js';

interface Events {
  ping: number;
  pong: string;
}

describe('safely', () => {
  it('reports an exception instead of throwing it', () => {
    const onError = vi.fn();
    const boom = new Error('boom');
    expect(() => safely(() => { throw boom; }, onError)).not.toThrow();
    expect(onError).toHaveBeenCalledWith(boom);
  });

  it('swallows an exception of the reporter itself', () => {
    expect(() => safely(() => { throw new Error('a'); }, () => { throw new Error('b'); })).not.toThrow();
    expect(() => safely(() => { throw new Error('a'); })).not.toThrow();
  });

  it('does not call the reporter on success', () => {
    const onError = vi.fn();
    let ran = false;
    safely(() => { ran = true; }, onError);
    expect(ran).toBe(true);
    expect(onError).not.toHaveBeenCalled();
  });
});

describe('Emitter', () => {
  it('a throwing listener does not stop the others and is reported', () => {
    const reported: [unknown, keyof Events][] = [];
    const e = new Emitter<Events>((err, event) => reported.push([err, event]));
    const got: string[] = [];
    const boom = new Error('listener failed');
    e.on('ping', (n) => got.push(`a${n}`));
    e.on('ping', () => { throw boom; });
    e.on('ping', (n) => got.push(`c${n}`));
    expect(() => e.emit('ping', 1)).not.toThrow();
    expect(got).toEqual(['a1', 'c1']);
    expect(reported).toEqual([[boom, 'ping']]);
  });

  it('delivers only to the listeners of the event, in order of registration', () => {
    const e = new Emitter<Events>();
    const got: string[] = [];
    e.on('pong', (s) => got.push(`1:${s}`));
    e.on('ping', (n) => got.push(`ping:${n}`));
    e.on('pong', (s) => got.push(`2:${s}`));
    e.emit('pong', 'x');
    expect(got).toEqual(['1:x', '2:x']);
    e.emit('ping', 7);
    expect(got).toEqual(['1:x', '2:x', 'ping:7']);
  });

  it('the returned function removes the listener', () => {
    const e = new Emitter<Events>();
    const l = vi.fn();
    const off = e.on('ping', l);
    e.emit('ping', 1);
    off();
    off();
    e.emit('ping', 2);
    expect(l).toHaveBeenCalledTimes(1);
    expect(l).toHaveBeenCalledWith(1);
  });

  it('a listener removing another during emit does not break the emit', () => {
    const e = new Emitter<Events>();
    const got: string[] = [];
    let offB: () => void = () => {};
    e.on('ping', () => { got.push('a'); offB(); });
    offB = e.on('ping', () => got.push('b'));
    e.emit('ping', 1); // a snapshot of the listeners is iterated
    e.emit('ping', 2);
    expect(got).toEqual(['a', 'b', 'a']);
  });

  it('emitting without listeners and clear work', () => {
    const e = new Emitter<Events>();
    expect(() => e.emit('ping', 1)).not.toThrow();
    const l = vi.fn();
    e.on('ping', l);
    e.clear();
    e.emit('ping', 1);
    expect(l).not.toHaveBeenCalled();
  });

  it('a throwing error reporter does not escape either', () => {
    const e = new Emitter<Events>(() => { throw new Error('reporter'); });
    const l = vi.fn();
    e.on('ping', () => { throw new Error('x'); });
    e.on('ping', l);
    expect(() => e.emit('ping', 1)).not.toThrow();
    expect(l).toHaveBeenCalled();
  });
});

describe('Store', () => {
  it('notifies only on change', () => {
    const s = new Store({ state: 'a', n: 1 });
    const l = vi.fn();
    s.subscribe(l);
    s.set({ state: 'a', n: 1 }); // equal: no notification
    expect(l).not.toHaveBeenCalled();
    s.set({ state: 'b', n: 1 });
    expect(l).toHaveBeenCalledTimes(1);
    expect(s.getSnapshot()).toEqual({ state: 'b', n: 1 });
  });

  it('keeps the old snapshot object when nothing changed (useSyncExternalStore stability)', () => {
    const first = { state: 'a', reason: { code: 1, message: 'x' } };
    const s = new Store(first);
    s.set({ state: 'a', reason: { code: 1, message: 'x' } });
    expect(s.getSnapshot()).toBe(first);
    s.set({ state: 'a', reason: { code: 2, message: 'x' } });
    expect(s.getSnapshot()).not.toBe(first);
    expect(s.getSnapshot().reason.code).toBe(2);
  });

  it('a key added or removed is a change', () => {
    const s = new Store<Record<string, number>>({ a: 1 });
    const l = vi.fn();
    s.subscribe(l);
    s.set({ a: 1, b: 2 });
    s.set({ a: 1 });
    expect(l).toHaveBeenCalledTimes(2);
  });

  it('primitives compare by value', () => {
    const s = new Store(1);
    const l = vi.fn();
    s.subscribe(l);
    s.set(1);
    s.set(2);
    s.set(2);
    s.set(Number.NaN);
    s.set(Number.NaN);
    expect(l).toHaveBeenCalledTimes(2);
  });

  it('null to object and back are changes', () => {
    const s = new Store<{ a: number } | null>(null);
    const l = vi.fn();
    s.subscribe(l);
    s.set({ a: 1 });
    s.set(null);
    s.set(null);
    expect(l).toHaveBeenCalledTimes(2);
  });

  it('unsubscribe stops notifications; a throwing listener does not stop others', () => {
    const s = new Store(0);
    const a = vi.fn(() => { throw new Error('a'); });
    const b = vi.fn();
    const offA = s.subscribe(a);
    s.subscribe(b);
    expect(() => s.set(1)).not.toThrow();
    expect(b).toHaveBeenCalledTimes(1);
    offA();
    s.set(2);
    expect(a).toHaveBeenCalledTimes(1);
    expect(b).toHaveBeenCalledTimes(2);
    s.clear();
    s.set(3);
    expect(b).toHaveBeenCalledTimes(2);
    expect(s.getSnapshot()).toBe(3);
  });

  it('getSnapshot and subscribe work detached from the instance (hook usage)', () => {
    const s = new Store('x');
    const { getSnapshot, subscribe } = s;
    const l = vi.fn();
    subscribe(l);
    s.set('y');
    expect(getSnapshot()).toBe('y');
    expect(l).toHaveBeenCalledTimes(1);
  });
});
