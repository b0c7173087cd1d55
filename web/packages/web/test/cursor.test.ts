import { describe, expect, it } from 'vitest';
import { Recent, asPosition, classify, later } from '../src/cursor.js';
import type { Publication } from '../src/types.js';

const pub = (offset: number, epoch = 'e1', channel = 'ch'): Publication => ({ channel, data: { n: offset }, offset, epoch });
const offsets = (pubs: Publication[] | null) => (pubs === null ? null : pubs.map((p) => p.offset));

describe('classify', () => {
  const at5 = { epoch: 'e1', offset: 5 };

  it('delivers the next offset of the same epoch', () => {
    expect(classify(at5, 'e1', 6)).toBe('deliver');
  });

  it('drops the current and older offsets as duplicates', () => {
    expect(classify(at5, 'e1', 5)).toBe('duplicate');
    expect(classify(at5, 'e1', 4)).toBe('duplicate');
    expect(classify(at5, 'e1', 1)).toBe('duplicate');
    expect(classify(at5, 'e1', 0)).toBe('duplicate');
  });

  it('reports a gap when offsets are skipped', () => {
    expect(classify(at5, 'e1', 7)).toBe('gap');
    expect(classify(at5, 'e1', 1000)).toBe('gap');
  });

  it('reports another epoch whatever the offset', () => {
    expect(classify(at5, 'e2', 6)).toBe('epoch');
    expect(classify(at5, 'e2', 1)).toBe('epoch');
    expect(classify(at5, 'e2', 5)).toBe('epoch');
    expect(classify(at5, '', 6)).toBe('epoch');
  });

  it('a reader without a position takes whatever comes first', () => {
    expect(classify(null, 'e1', 1)).toBe('deliver');
    expect(classify(null, 'e1', 99)).toBe('deliver');
  });

  it('publications without an offset or epoch are always delivered', () => {
    expect(classify(at5, 'e1', undefined)).toBe('deliver');
    expect(classify(at5, undefined, 3)).toBe('deliver');
    expect(classify(at5, undefined, undefined)).toBe('deliver');
    expect(classify(null, undefined, undefined)).toBe('deliver');
  });

  it('position 0 delivers offset 1 and gaps at 2', () => {
    const at0 = { epoch: 'e', offset: 0 };
    expect(classify(at0, 'e', 1)).toBe('deliver');
    expect(classify(at0, 'e', 2)).toBe('gap');
  });
});

describe('later', () => {
  it('later picks the higher offset of one epoch, else the second', () => {
    const a3 = { epoch: 'a', offset: 3 };
    const a5 = { epoch: 'a', offset: 5 };
    const b1 = { epoch: 'b', offset: 1 };
    expect(later(a3, a5)).toBe(a5);
    expect(later(a5, a3)).toBe(a5);
    expect(later(a5, b1)).toBe(b1);
    expect(later(null, a3)).toBe(a3);
  });
});

describe('asPosition', () => {
  it('accepts a well-formed position and copies only its fields', () => {
    const p = asPosition({ epoch: 'xyz', offset: 12, extra: true });
    expect(p).toEqual({ epoch: 'xyz', offset: 12 });
    expect(Object.keys(p!)).toEqual(['epoch', 'offset']);
    expect(asPosition({ epoch: '', offset: 0 })).toEqual({ epoch: '', offset: 0 });
  });

  it.each([
    ['null', null],
    ['undefined', undefined],
    ['a string', 'e:1'],
    ['a number', 5],
    ['an array', ['e', 1]],
    ['no epoch', { offset: 1 }],
    ['no offset', { epoch: 'e' }],
    ['numeric epoch', { epoch: 1, offset: 1 }],
    ['string offset', { epoch: 'e', offset: '1' }],
    ['negative offset', { epoch: 'e', offset: -1 }],
    ['fractional offset', { epoch: 'e', offset: 1.5 }],
    ['NaN offset', { epoch: 'e', offset: Number.NaN }],
    ['infinite offset', { epoch: 'e', offset: Number.POSITIVE_INFINITY }],
    ['unsafe offset', { epoch: 'e', offset: 2 ** 53 }],
    ['bigint offset', { epoch: 'e', offset: 1n }],
  ])('rejects %s', (_name, junk) => {
    expect(asPosition(junk)).toBeNull();
  });
});

describe('Recent', () => {
  it('keeps publications in order and returns a complete range', () => {
    const r = new Recent();
    for (let i = 1; i <= 5; i++) r.push(pub(i));
    expect(offsets(r.range({ epoch: 'e1', offset: 2 }, 5))).toEqual([3, 4, 5]);
    expect(offsets(r.range({ epoch: 'e1', offset: 0 }, 5))).toEqual([1, 2, 3, 4, 5]);
    expect(offsets(r.range({ epoch: 'e1', offset: 1 }, 3))).toEqual([2, 3]);
  });

  it('returns the publication objects themselves', () => {
    const r = new Recent();
    const p1 = pub(1);
    r.push(p1);
    expect(r.range({ epoch: 'e1', offset: 0 }, 1)![0]).toBe(p1);
  });

  it('an empty range is complete even for another epoch or an empty buffer', () => {
    const r = new Recent();
    expect(r.range({ epoch: 'e1', offset: 5 }, 5)).toEqual([]);
    expect(r.range({ epoch: 'e1', offset: 5 }, 3)).toEqual([]);
    r.push(pub(1));
    expect(r.range({ epoch: 'other', offset: 7 }, 7)).toEqual([]);
  });

  it('a range reaching beyond what it holds is missing', () => {
    const r = new Recent();
    for (let i = 1; i <= 3; i++) r.push(pub(i));
    expect(r.range({ epoch: 'e1', offset: 0 }, 4)).toBeNull();
    expect(r.range({ epoch: 'e1', offset: 2 }, 10)).toBeNull();
  });

  it('a range with a hole is missing', () => {
    const r = new Recent();
    r.push(pub(1));
    r.push(pub(2));
    r.push(pub(4));
    r.push(pub(5));
    expect(r.range({ epoch: 'e1', offset: 0 }, 5)).toBeNull();
    expect(r.range({ epoch: 'e1', offset: 1 }, 3)).toBeNull();
    expect(offsets(r.range({ epoch: 'e1', offset: 3 }, 5))).toEqual([4, 5]);
    expect(offsets(r.range({ epoch: 'e1', offset: 0 }, 2))).toEqual([1, 2]);
  });

  it('a range of another epoch is missing', () => {
    const r = new Recent();
    for (let i = 1; i <= 3; i++) r.push(pub(i));
    expect(r.range({ epoch: 'e2', offset: 0 }, 3)).toBeNull();
  });

  it('keeps at most `capacity`, dropping the oldest', () => {
    const r = new Recent(3);
    for (let i = 1; i <= 10; i++) r.push(pub(i));
    expect(offsets(r.range({ epoch: 'e1', offset: 7 }, 10))).toEqual([8, 9, 10]);
    expect(r.range({ epoch: 'e1', offset: 6 }, 10)).toBeNull();
  });

  it('a new epoch forgets the old one', () => {
    const r = new Recent();
    for (let i = 1; i <= 3; i++) r.push(pub(i, 'old'));
    r.push(pub(1, 'new'));
    r.push(pub(2, 'new'));
    expect(r.range({ epoch: 'old', offset: 0 }, 3)).toBeNull();
    expect(r.range({ epoch: 'old', offset: 1 }, 2)).toBeNull();
    expect(offsets(r.range({ epoch: 'new', offset: 0 }, 2))).toEqual([1, 2]);
  });

  it('an out-of-order push is sorted in, and a repeated offset is ignored', () => {
    const r = new Recent();
    r.push(pub(1));
    r.push(pub(3));
    r.push(pub(2));
    expect(offsets(r.range({ epoch: 'e1', offset: 0 }, 3))).toEqual([1, 2, 3]);
    const dup = pub(2);
    dup.data = 'second copy';
    r.push(dup);
    r.push(pub(3));
    const got = r.range({ epoch: 'e1', offset: 0 }, 3)!;
    expect(offsets(got)).toEqual([1, 2, 3]);
    expect(got[1]!.data).toEqual({ n: 2 });
  });

  it('an old offset pushed into a full buffer does not push out newer ones wrongly', () => {
    const r = new Recent(3);
    r.push(pub(2));
    r.push(pub(3));
    r.push(pub(4));
    r.push(pub(1)); // sorted in at the front, then the oldest (1) is dropped
    expect(offsets(r.range({ epoch: 'e1', offset: 1 }, 4))).toEqual([2, 3, 4]);
    expect(r.range({ epoch: 'e1', offset: 0 }, 4)).toBeNull();
  });

  it('ignores publications without an offset or epoch', () => {
    const r = new Recent();
    r.push({ channel: 'ch', data: 1 });
    r.push({ channel: 'ch', data: 1, offset: 1 });
    r.push({ channel: 'ch', data: 1, epoch: 'e1' });
    expect(r.range({ epoch: 'e1', offset: 0 }, 1)).toBeNull();
    r.push(pub(1));
    expect(offsets(r.range({ epoch: 'e1', offset: 0 }, 1))).toEqual([1]);
  });

  it('clear forgets everything, including the epoch', () => {
    const r = new Recent();
    r.push(pub(1));
    r.push(pub(2));
    r.clear();
    expect(r.range({ epoch: 'e1', offset: 0 }, 1)).toBeNull();
    r.push(pub(3));
    expect(offsets(r.range({ epoch: 'e1', offset: 2 }, 3))).toEqual([3]);
  });
});
