// The React end-to-end page: @herald/react's hooks and components on a real client,
// recording what they render and receive in `window.r` for the test to read.
import { StrictMode, useState } from 'react';
import { createRoot } from 'react-dom/client';
import { createHerald, type EntityEvent } from '../packages/web/src/index.js';
import {
  ConnectionStatus,
  HeraldProvider,
  LiveUpdateToasts,
  useEditConflict,
  useLiveEntity,
  useLiveList,
  useSubscription,
} from '../packages/react/src/index.js';

const q = new URLSearchParams(location.search);
const me = q.get('user') ?? 'alice';
const record = { a: [] as number[], b: [] as number[], deleted: [] as string[], refreshed: 0 };
(window as unknown as { r: unknown }).r = record;

const herald = createHerald({
  url: q.get('ws') as string,
  share: (q.get('share') ?? 'worker') as 'worker',
  getToken: async () => (await fetch(`/token?user=${me}`)).text(),
  reconnect: { baseDelayMs: 300, maxDelayMs: 2000, minDelayMs: 100 },
});

interface App {
  id: string;
  name: string;
  version: number;
}

function Listener({ name }: { name: 'a' | 'b' }) {
  useSubscription<{ i: number }>('news', (p) => record[name].push(p.data.i));
  return <span data-testid={`listener-${name}`}>{name}</span>;
}

function Apps() {
  const list = useLiveList<App>({ type: 'applications', load: async () => (await fetch('/api/apps')).json() });
  if (list.loading) return <p>Loading…</p>;
  return (
    <ul data-testid="apps">
      {list.items.map((a) => (
        <li key={a.id} data-id={a.id} data-highlighted={list.highlighted.has(a.id) ? 'yes' : 'no'}>{a.name}</li>
      ))}
    </ul>
  );
}

function Detail({ id }: { id: string }) {
  const [notice, setNotice] = useState('');
  const live = useLiveEntity<App>({
    type: 'applications',
    id,
    load: async () => ((await (await fetch('/api/apps')).json()) as App[]).find((a) => a.id === id) ?? null,
    onDeleted: (e) => {
      record.deleted.push(e.entity_id);
      setNotice(`Deleted by ${e.actor}`);
    },
  });
  const conflict = useEditConflict(live.entity ? { type: 'applications', id, version: editingVersion(live.entity) } : null, me);
  return (
    <section>
      <h2 data-testid="detail">{live.entity?.name ?? ''}</h2>
      <p data-testid="notice">{notice}</p>
      {conflict ? (
        <div role="alert" data-testid="conflict">
          {conflict.event.actor} saved version {conflict.event.version}
          <button type="button" onClick={conflict.dismiss}>Keep editing</button>
        </div>
      ) : null}
      <LiveUpdateToasts<App>
        scope={{ type: 'applications', id }}
        me={me}
        timeoutMs={Number(q.get('toastMs') ?? 10_000)}
        onRefresh={() => {
          record.refreshed++;
          live.reload();
        }}
        render={(e: EntityEvent<App>) => `${e.action === 'updated' ? 'Updated' : e.action} by ${e.actor}`}
      />
    </section>
  );
}

// The form was opened at the version first loaded: later saves by others conflict with it.
let openedAt: number | null = null;
function editingVersion(a: App): number {
  openedAt ??= a.version;
  return openedAt;
}

function Page() {
  const [showB, setShowB] = useState(true);
  return (
    <HeraldProvider client={herald}>
      <header>
        <ConnectionStatus />
      </header>
      <Listener name="a" />
      {showB ? <Listener name="b" /> : null}
      <button type="button" data-testid="toggle-b" onClick={() => setShowB((v) => !v)}>toggle b</button>
      <Apps />
      {q.get('detail') ? <Detail id={q.get('detail') as string} /> : null}
    </HeraldProvider>
  );
}

createRoot(document.getElementById('root') as HTMLElement).render(
  <StrictMode>
    <Page />
  </StrictMode>,
);
