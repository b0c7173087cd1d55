// The demo dashboard: who is looking, the shared Herald connection, and the routes.
import { StrictMode, useEffect, useState } from 'react';
import { createRoot } from 'react-dom/client';
import { createHerald, type Herald } from '@herald/web';
import { ConnectionStatus, HeraldProvider, useConnectionStatus } from '@herald/react';
import '@herald/react/styles.css';
import './styles.css';
import { api, type DemoConfig } from './api.js';
import { DetailPage, EditPage, ListPage, type Viewer } from './pages.js';
import { Link, navigate, usePath } from './router.js';

function Login({ users }: { users: string[] }) {
  return (
    <main>
      <h1>Herald demo</h1>
      <p>Sign in as:</p>
      <ul>
        {users.map((u) => (
          <li key={u}><a href={`/login?user=${u}`}>{u}</a></li>
        ))}
      </ul>
    </main>
  );
}

/** The connection state in words, plus the details a user may want. */
function Connection() {
  const status = useConnectionStatus();
  return (
    <span className="connection">
      <ConnectionStatus />
      {status.tabs > 1 ? <span className="muted"> · {status.tabs} tabs</span> : null}
    </span>
  );
}

function Routes({ viewer }: { viewer: Viewer }) {
  const path = usePath();
  useEffect(() => {
    if (path === '/' || path === '') navigate('/applications', true);
  }, [path]);
  const edit = /^\/applications\/([^/]+)\/edit$/.exec(path);
  if (edit?.[1]) return <EditPage key={edit[1]} id={decodeURIComponent(edit[1])} viewer={viewer} />;
  const detail = /^\/applications\/([^/]+)$/.exec(path);
  if (detail?.[1]) return <DetailPage key={detail[1]} id={decodeURIComponent(detail[1])} viewer={viewer} />;
  return <ListPage viewer={viewer} />;
}

/**
 * The page's one client, made once outside React (StrictMode runs render-time code
 * twice in development, and a client made there would be made twice).
 */
let client: Herald | null = null;
function heraldFor(config: DemoConfig): Herald {
  if (!client) {
    const share = new URLSearchParams(location.search).get('share');
    client = createHerald({
      url: config.heraldUrl,
      share: share === 'off' || share === 'leader' || share === 'worker' ? share : 'auto',
      getToken: async () => {
        const res = await fetch('/api/herald/token');
        return res.ok ? res.text() : null;
      },
      getSubscriptionToken: async (channel) => {
        const res = await fetch(`/api/herald/subscription-token?channel=${encodeURIComponent(channel)}`);
        return res.ok ? res.text() : null;
      },
    });
  }
  return client;
}

function App({ config }: { config: DemoConfig }) {
  const user = config.user;
  if (!user) return <Login users={config.users} />;
  const herald = heraldFor(config);
  const viewer: Viewer = { user, audience: config.canSeeRestricted ? 'restricted' : 'public', canSeeRestricted: config.canSeeRestricted };
  return (
    <HeraldProvider client={herald}>
      <header>
        <Link to="/applications" className="brand">Herald demo</Link>
        <Connection />
        <span className="user">
          {user} · <a href="/logout">sign out</a>
        </span>
      </header>
      <Routes viewer={viewer} />
    </HeraldProvider>
  );
}

function Boot() {
  const [config, setConfig] = useState<DemoConfig | null>(null);
  const [error, setError] = useState('');
  useEffect(() => {
    api.config().then(setConfig, (e: unknown) => setError(String(e)));
  }, []);
  if (error) return <p role="alert">The demo backend is not answering: {error}</p>;
  if (!config) return null;
  return <App config={config} />;
}

createRoot(document.getElementById('root') as HTMLElement).render(
  <StrictMode>
    <Boot />
  </StrictMode>,
);
