// The end-to-end test page: one Herald client, driven by the test through `window.t`,
// recording everything the application would see.
import { createHerald, type Herald, type Publication, type Status } from '../packages/web/src/index.js';

const q = new URLSearchParams(location.search);
const user = q.get('user') ?? 'alice';
const extra = JSON.parse(q.get('options') ?? '{}');

interface Delivery {
  offset?: number;
  epoch?: string;
  data: unknown;
  at: number;
}

const rec = {
  pubs: {} as Record<string, Delivery[]>,
  resyncs: [] as unknown[],
  subscribed: [] as unknown[],
  errors: [] as unknown[],
  statuses: [] as Status[],
  fallbacks: [] as unknown[],
  /** Milliseconds from the client's creation to its first connection. */
  firstConnectedMs: null as number | null,
};

const createdAt = performance.now();
const herald: Herald = createHerald({
  url: q.get('ws') as string,
  share: (q.get('share') ?? 'auto') as 'auto',
  getToken: async () => {
    const r = await fetch(`/token?user=${encodeURIComponent(user)}${q.get('bad') ? '&bad=1' : ''}${q.get('ttl') ? `&ttl=${q.get('ttl')}` : ''}`);
    return r.text();
  },
  getSubscriptionToken: async (channel: string) => {
    const r = await fetch(`/subtoken?user=${encodeURIComponent(user)}&channel=${encodeURIComponent(channel)}`);
    return r.ok ? r.text() : null;
  },
  reconnect: { baseDelayMs: 300, maxDelayMs: 2000, minDelayMs: 100 },
  ...extra,
});

herald.status.subscribe(() => {
  const st = herald.status.getSnapshot();
  rec.statuses.push(st);
  if (st.state === 'connected' && rec.firstConnectedMs === null) rec.firstConnectedMs = Math.round(performance.now() - createdAt);
});
herald.on('fallback', (e) => rec.fallbacks.push(e));
herald.on('resync', (e) => rec.resyncs.push(e));
herald.on('subscribed', (e) => rec.subscribed.push(e));
herald.on('error', (e) => rec.errors.push(e));

const unsubs = new Map<string, () => void>();
const extraHandlers: (() => void)[] = [];

function subscribe(channel: string): void {
  if (unsubs.has(channel)) return;
  rec.pubs[channel] ??= [];
  unsubs.set(channel, herald.subscribe(channel, (p: Publication) => {
    rec.pubs[channel]?.push({ offset: p.offset, epoch: p.epoch, data: p.data, at: performance.timeOrigin + performance.now() });
  }));
}

for (const c of q.getAll('sub')) subscribe(c);

(window as unknown as { t: unknown }).t = {
  herald,
  subscribe,
  unsubscribe(channel: string) {
    unsubs.get(channel)?.();
    unsubs.delete(channel);
  },
  /** A second handler on `channel` that throws on every publication. */
  addThrowingHandler(channel: string) {
    extraHandlers.push(herald.subscribe(channel, () => {
      throw new Error('application bug');
    }));
  },
  close: () => herald.close(),
  retry: (id: string) => herald.outbox.retry(id),
  discard: (id: string) => herald.outbox.discard(id),
  record: () => JSON.parse(JSON.stringify(rec)),
  status: () => herald.status.getSnapshot(),
  outbox: () => herald.outbox.status.getSnapshot(),
  enqueue: (channel: string, data: unknown, opts?: object) => herald.outbox.enqueue(channel, data, opts),
  publish: (channel: string, data: unknown, key?: string) => herald.publish(channel, data, key ? { idempotencyKey: key } : {}),
  failed: () => herald.outbox.failed(),
};
