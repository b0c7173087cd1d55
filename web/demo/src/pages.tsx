// The demo's pages: the live list, an application's detail, and its edit form.
import { useEffect, useRef, useState, type FormEvent } from 'react';
import { EditConflictBanner, LiveUpdateToasts, useEditConflict, useLiveEntity, useLiveList, usePresence } from '@herald/react';
import type { Audience } from '@herald/web';
import { api, ApiError, type Application } from './api.js';
import { Link, navigate } from './router.js';

/** Who is looking, and which audience of entity events they read. */
export interface Viewer {
  user: string;
  audience: Audience;
  canSeeRestricted: boolean;
}

const STATUSES: Application['status'][] = ['active', 'paused', 'retired'];

function time(ms: number): string {
  return new Date(ms).toLocaleTimeString();
}

export function ListPage({ viewer }: { viewer: Viewer }) {
  const list = useLiveList<Application>({ type: 'applications', audience: viewer.audience, load: api.list, highlightMs: 4000 });
  const [name, setName] = useState('');
  const [restricted, setRestricted] = useState(false);
  const [error, setError] = useState('');

  const create = async (e: FormEvent) => {
    e.preventDefault();
    setError('');
    try {
      await api.create({ name, status: 'active', restricted });
      setName('');
      setRestricted(false);
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    }
  };

  return (
    <main>
      <h1>Applications</h1>
      <form className="create" onSubmit={create}>
        <input aria-label="New application name" placeholder="New application" value={name} onChange={(e) => setName(e.target.value)} required maxLength={100} />
        {viewer.canSeeRestricted ? (
          <label>
            <input type="checkbox" checked={restricted} onChange={(e) => setRestricted(e.target.checked)} /> restricted
          </label>
        ) : null}
        <button type="submit">Create</button>
        {error ? <span className="error" role="alert">{error}</span> : null}
      </form>
      {list.loading && list.items.length === 0 ? <p>Loading…</p> : null}
      {list.error ? <p className="error" role="alert">Could not load: {String(list.error)}</p> : null}
      <table data-testid="applications">
        <thead>
          <tr><th>Name</th><th>Owner</th><th>Status</th><th>Version</th><th>Updated</th></tr>
        </thead>
        <tbody>
          {list.items.map((a) => (
            <tr key={a.id} data-id={a.id} className={list.highlighted.has(a.id) ? 'changed' : undefined}>
              <td>
                <Link to={`/applications/${a.id}`}>{a.name}</Link>
                {a.restricted ? <span className="tag">restricted</span> : null}
              </td>
              <td>{a.owner}</td>
              <td>{a.status}</td>
              <td>{a.version}</td>
              <td>{time(a.updated_at)} by {a.updated_by}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </main>
  );
}

export function DetailPage({ id, viewer }: { id: string; viewer: Viewer }) {
  const [notice, setNotice] = useState('');
  const redirect = useRef<ReturnType<typeof setTimeout> | null>(null);
  useEffect(() => () => {
    if (redirect.current) clearTimeout(redirect.current);
  }, []);
  // Not live: a change by someone else offers a Refresh instead of changing under the reader.
  const live = useLiveEntity<Application>({
    type: 'applications',
    id,
    audience: viewer.audience,
    load: () => api.get(id),
    live: false,
    onDeleted: (e) => {
      setNotice(`This application was deleted by ${e.actor || 'someone'}. Back to the list…`);
      redirect.current = setTimeout(() => navigate('/applications', true), 2000);
    },
    onEvent: (e) => {
      // The reader's own changes show at once.
      if (e.actor === viewer.user && e.action !== 'deleted') live.reload();
    },
  });

  const remove = async () => {
    if (!live.entity) return;
    try {
      await api.remove(id);
    } catch (err) {
      setNotice(err instanceof Error ? err.message : String(err));
    }
  };

  if (live.loading && !live.entity) return <main><p>Loading…</p></main>;
  if (notice) return <main><p role="alert" className="notice">{notice}</p></main>;
  if (!live.entity) return <main><p role="alert" className="notice">No such application.</p><Link to="/applications">Back to the list</Link></main>;
  const a = live.entity;
  return (
    <main>
      <p><Link to="/applications">← Applications</Link></p>
      <h1 data-testid="detail-name">{a.name}</h1>
      <dl>
        <dt>Owner</dt><dd>{a.owner}</dd>
        <dt>Status</dt><dd data-testid="detail-status">{a.status}</dd>
        <dt>Restricted</dt><dd>{a.restricted ? 'yes' : 'no'}</dd>
        <dt>Version</dt><dd data-testid="detail-version">{a.version}</dd>
        <dt>Updated</dt><dd>{time(a.updated_at)} by {a.updated_by}</dd>
      </dl>
      <p className="actions">
        <Link to={`/applications/${a.id}/edit`} className="button">Edit</Link>
        <button type="button" onClick={remove}>Delete</button>
      </p>
      <LiveUpdateToasts<Application>
        scope={{ type: 'applications', id, audience: viewer.audience }}
        me={viewer.user}
        since={a.version}
        onRefresh={() => live.reload()}
        render={(e) => (e.action === 'deleted' ? `Deleted by ${e.actor}` : `Updated by ${e.actor}`)}
      />
    </main>
  );
}

export function EditPage({ id, viewer }: { id: string; viewer: Viewer }) {
  const [base, setBase] = useState<Application | null>(null);
  const [name, setName] = useState('');
  const [status, setStatus] = useState<Application['status']>('active');
  const [restricted, setRestricted] = useState(false);
  const [message, setMessage] = useState('');
  const [missing, setMissing] = useState(false);

  const load = async () => {
    const a = await api.get(id);
    if (!a) return setMissing(true);
    setBase(a);
    setName(a.name);
    setStatus(a.status);
    setRestricted(a.restricted);
    setMessage('');
  };
  useEffect(() => {
    void load();
  }, [id]);

  const conflict = useEditConflict<Application>(base ? { type: 'applications', id, version: base.version, audience: viewer.audience } : null, viewer.user);
  // Everyone on this edit page is subscribed to its own private channel (a token only
  // for who may see the application): its presence is who edits.
  const editing = usePresence(base ? `$editing:applications.${id}` : null);
  const others = editing.users.filter((u) => u !== viewer.user);

  const save = async (e: FormEvent) => {
    e.preventDefault();
    if (!base) return;
    try {
      await api.update(id, { version: base.version, name, status, restricted });
      navigate(`/applications/${id}`);
    } catch (err) {
      if (err instanceof ApiError && err.status === 409) {
        const who = err.current?.updated_by ?? 'someone';
        setMessage(`Not saved: ${who} saved a newer version (${err.current?.version ?? '?'}) first. Reload to see it, then make your change again.`);
      } else {
        setMessage(err instanceof Error ? err.message : String(err));
      }
    }
  };

  if (missing) return <main><p role="alert" className="notice">No such application.</p><Link to="/applications">Back to the list</Link></main>;
  if (!base) return <main><p>Loading…</p></main>;
  return (
    <main>
      <p><Link to={`/applications/${id}`}>← {base.name}</Link></p>
      <h1>Edit {base.name}</h1>
      {others.length > 0 ? <p className="muted" data-testid="also-editing">Also editing: {others.join(', ')}</p> : null}
      <div data-testid="conflict-area">
        <EditConflictBanner conflict={conflict} onReload={() => void load()} />
      </div>
      <form className="edit" onSubmit={save}>
        <label>Name <input value={name} onChange={(e) => setName(e.target.value)} required maxLength={100} /></label>
        <label>
          Status{' '}
          <select value={status} onChange={(e) => setStatus(e.target.value as Application['status'])}>
            {STATUSES.map((s) => <option key={s} value={s}>{s}</option>)}
          </select>
        </label>
        {viewer.canSeeRestricted ? (
          <label><input type="checkbox" checked={restricted} onChange={(e) => setRestricted(e.target.checked)} /> restricted</label>
        ) : null}
        <button type="submit">Save</button>
      </form>
      {message ? <p role="alert" className="error" data-testid="save-error">{message}</p> : null}
    </main>
  );
}
