import { describe, expect, it } from 'vitest';
import { Backoff, DEFAULT_RECONNECT, reconnectPolicy } from '../src/backoff.js';

const NEAR_ONE = 0.999;

/** Delays of `n` consecutive failures with `random` fixed. */
function delays(b: Backoff, n: number, now = 0): number[] {
  return Array.from({ length: n }, () => b.failed(now));
}

describe('reconnectPolicy', () => {
  it('fills in the defaults', () => {
    expect(reconnectPolicy()).toEqual(DEFAULT_RECONNECT);
    expect(reconnectPolicy({})).toEqual({
      baseDelayMs: 1000,
      maxDelayMs: 30_000,
      minDelayMs: 250,
      stableAfterMs: 10_000,
      wakeAfterMs: 60_000,
    });
  });

  it('keeps sensible values as given', () => {
    expect(reconnectPolicy({ baseDelayMs: 100, maxDelayMs: 500, minDelayMs: 50, stableAfterMs: 7, wakeAfterMs: 9 })).toEqual({
      baseDelayMs: 100,
      maxDelayMs: 500,
      minDelayMs: 50,
      stableAfterMs: 7,
      wakeAfterMs: 9,
    });
  });

  it('replaces NaN and infinities with the defaults', () => {
    const p = reconnectPolicy({
      baseDelayMs: Number.NaN,
      maxDelayMs: Number.POSITIVE_INFINITY,
      minDelayMs: Number.NaN,
      stableAfterMs: Number.NEGATIVE_INFINITY,
      wakeAfterMs: Number.NaN,
    });
    expect(p).toEqual(DEFAULT_RECONNECT);
  });

  it('replaces non-numbers with the defaults', () => {
    const p = reconnectPolicy({ baseDelayMs: '5' as unknown as number, minDelayMs: null as unknown as number });
    expect(p.baseDelayMs).toBe(1000);
    expect(p.minDelayMs).toBe(250);
  });

  it('clamps a zero or negative floor to 50 ms', () => {
    expect(reconnectPolicy({ minDelayMs: 0 }).minDelayMs).toBe(50);
    expect(reconnectPolicy({ minDelayMs: -100 }).minDelayMs).toBe(50);
    expect(reconnectPolicy({ minDelayMs: 10 }).minDelayMs).toBe(50);
  });

  it('never lets the base fall below the floor, nor the cap below the base', () => {
    const p = reconnectPolicy({ minDelayMs: 400, baseDelayMs: 100, maxDelayMs: 10 });
    expect(p.minDelayMs).toBe(400);
    expect(p.baseDelayMs).toBe(400);
    expect(p.maxDelayMs).toBe(400);
    const q = reconnectPolicy({ baseDelayMs: 2000, maxDelayMs: 1000 });
    expect(q.baseDelayMs).toBe(2000);
    expect(q.maxDelayMs).toBe(2000);
    const r = reconnectPolicy({ baseDelayMs: -5, maxDelayMs: -5 });
    expect(r.baseDelayMs).toBe(250);
    expect(r.maxDelayMs).toBe(250);
  });

  it('clamps negative stability and wake thresholds to 0', () => {
    const p = reconnectPolicy({ stableAfterMs: -1, wakeAfterMs: -1 });
    expect(p.stableAfterMs).toBe(0);
    expect(p.wakeAfterMs).toBe(0);
  });
});

describe('Backoff', () => {
  it('ceilings double from the base: 1 s, 2 s, 4 s … up to the cap (random near 1)', () => {
    const b = new Backoff(reconnectPolicy(), () => NEAR_ONE);
    const got = delays(b, 9);
    const ceilings = [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000];
    got.forEach((d, i) => {
      expect(d).toBeLessThanOrEqual(ceilings[i]!);
      expect(d).toBeGreaterThanOrEqual(Math.floor(ceilings[i]! * NEAR_ONE));
    });
    expect(b.attempt).toBe(9);
  });

  it('full jitter: the delay is random × ceiling', () => {
    const b = new Backoff(reconnectPolicy(), () => 0.5);
    expect(delays(b, 4)).toEqual([500, 1000, 2000, 4000]);
  });

  it('random 0 gives the floor, never 0', () => {
    const b = new Backoff(reconnectPolicy(), () => 0);
    expect(delays(b, 5)).toEqual([250, 250, 250, 250, 250]);
    const c = new Backoff(reconnectPolicy({ minDelayMs: 0 }), () => 0);
    expect(c.failed(0)).toBe(50);
  });

  it('the floor holds even when it is above the jittered delay', () => {
    const b = new Backoff(reconnectPolicy({ baseDelayMs: 1000, minDelayMs: 600 }), () => 0.1);
    expect(b.failed(0)).toBe(600); // 0.1 × 1000 = 100 < 600
    expect(b.failed(0)).toBe(600); // 0.1 × 2000 = 200 < 600
    expect(b.failed(0)).toBe(600); // 0.1 × 4000 = 400 < 600
    expect(b.failed(0)).toBe(800); // 0.1 × 8000
  });

  it('never exceeds the cap however many failures', () => {
    const b = new Backoff(reconnectPolicy({ baseDelayMs: 100, maxDelayMs: 500, minDelayMs: 50 }), () => NEAR_ONE);
    const got = delays(b, 200);
    for (const d of got) expect(d).toBeLessThanOrEqual(500);
    expect(got.slice(0, 4)).toEqual([99, 199, 399, 499]);
    expect(Number.isFinite(got[199]!)).toBe(true);
  });

  it('resets only after a connection stable for stableAfterMs', () => {
    const b = new Backoff(reconnectPolicy({ stableAfterMs: 10_000 }), () => NEAR_ONE);
    delays(b, 3, 0);
    expect(b.attempt).toBe(3);
    b.connected(100_000);
    // Stable long enough: counting starts over at the base ceiling.
    expect(b.failed(110_000)).toBe(Math.floor(1000 * NEAR_ONE));
    expect(b.attempt).toBe(1);
  });

  it('a flapping connection keeps growing the delay', () => {
    const b = new Backoff(reconnectPolicy({ stableAfterMs: 10_000 }), () => NEAR_ONE);
    let now = 0;
    const got: number[] = [];
    for (let i = 0; i < 6; i++) {
      b.connected(now);
      now += 9_999; // dropped just before it counted as stable
      got.push(b.failed(now));
    }
    expect(got).toEqual([999, 1998, 3996, 7992, 15984, 29970]);
    expect(b.attempt).toBe(6);
  });

  it('a failure without a connection in between never resets', () => {
    const b = new Backoff(reconnectPolicy({ stableAfterMs: 10 }), () => NEAR_ONE);
    b.failed(0);
    b.failed(1_000_000);
    expect(b.attempt).toBe(2);
    // `connected` is consumed by a failure: a later failure does not see it again.
    b.connected(2_000_000);
    b.failed(2_000_001); // not stable: 1 ms
    b.failed(9_000_000);
    expect(b.attempt).toBe(4);
  });

  it('reset forgets all failures', () => {
    const b = new Backoff(reconnectPolicy(), () => NEAR_ONE);
    delays(b, 5);
    b.reset();
    expect(b.attempt).toBe(0);
    expect(b.failed(0)).toBe(999);
  });

  it('huge attempt counts do not overflow', () => {
    const b = new Backoff(reconnectPolicy(), () => NEAR_ONE);
    b.attempt = 5000;
    expect(b.failed(0)).toBe(Math.floor(30_000 * NEAR_ONE));
  });
});
