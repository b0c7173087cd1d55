// Command-line flags (and the environment variables behind them) of the demo backend.

export const USAGE = `usage: node server/main.mjs --herald-api URL --api-key KEY --token-secret SECRET [options]

  --port P           port to listen on (default 8080; 0 picks a free one)     env DEMO_PORT
  --host H           address to listen on (default 127.0.0.1)                  env DEMO_HOST
  --db FILE          SQLite database file (default :memory:)                   env DEMO_DB
  --herald-api URL   Herald's HTTP base URL, for publishing (required)         env DEMO_HERALD_API
  --herald-ws URL    the WebSocket URL browsers connect to (default: the
                     --herald-api URL as ws://…/connection/websocket)          env DEMO_HERALD_WS
  --api-key K        Herald's server API key (required)                        env DEMO_API_KEY
  --token-secret S   Herald's token.hmac_secret, at least 32 bytes (required)  env DEMO_TOKEN_SECRET
  --static DIR       serve the built frontend from DIR (optional)              env DEMO_STATIC
  --verbose          log one line per request to stderr                        env DEMO_VERBOSE=1
  --help             print this and exit

Flags win over the environment. Flags also take the form --flag=value.`;

/** A bad command line: main prints the message and exits with status 2. */
export class UsageError extends Error {}

const FLAGS = {
  port: 'DEMO_PORT',
  host: 'DEMO_HOST',
  db: 'DEMO_DB',
  'herald-api': 'DEMO_HERALD_API',
  'herald-ws': 'DEMO_HERALD_WS',
  'api-key': 'DEMO_API_KEY',
  'token-secret': 'DEMO_TOKEN_SECRET',
  static: 'DEMO_STATIC',
};
const SWITCHES = { verbose: 'DEMO_VERBOSE', help: null };

function httpUrl(flag, text) {
  let url;
  try {
    url = new URL(text);
  } catch {
    throw new UsageError(`--${flag}: ${JSON.stringify(text)} is not a URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new UsageError(`--${flag}: expected an http:// or https:// URL, got ${JSON.stringify(text)}`);
  }
  return url.href.replace(/\/+$/, '');
}

/**
 * Reads the configuration from `argv` (flags win) and `env`. Throws UsageError on a
 * bad command line; returns `{ help: true }` for --help.
 */
export function parseConfig(argv, env = {}) {
  const given = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const m = /^--([a-z-]+)(?:=(.*))?$/s.exec(arg);
    if (!m) throw new UsageError(`unexpected argument ${JSON.stringify(arg)}`);
    const [, name, inline] = m;
    if (name in SWITCHES) {
      if (inline !== undefined) throw new UsageError(`--${name} takes no value`);
      given[name] = true;
    } else if (name in FLAGS) {
      const value = inline ?? argv[++i];
      if (value === undefined || (inline === undefined && value.startsWith('--'))) {
        throw new UsageError(`--${name} needs a value`);
      }
      given[name] = value;
    } else {
      throw new UsageError(`unknown flag --${name}`);
    }
  }
  if (given.help) return { help: true };
  const get = (name) => given[name] ?? (env[FLAGS[name]] || undefined);

  const portText = get('port') ?? '8080';
  if (!/^\d{1,5}$/.test(portText) || Number(portText) > 65535) {
    throw new UsageError(`--port: ${JSON.stringify(portText)} is not a port number (0–65535)`);
  }

  const missing = ['herald-api', 'api-key', 'token-secret'].filter((n) => !get(n));
  if (missing.length > 0) {
    throw new UsageError(`missing ${missing.map((n) => `--${n}`).join(', ')}`);
  }
  const heraldApi = httpUrl('herald-api', get('herald-api'));
  let heraldWs = get('herald-ws');
  if (heraldWs === undefined) {
    const u = new URL(heraldApi);
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    u.pathname = `${u.pathname.replace(/\/+$/, '')}/connection/websocket`;
    heraldWs = u.href;
  } else if (!/^wss?:\/\/[^/]/.test(heraldWs) && !heraldWs.startsWith('/')) {
    throw new UsageError(`--herald-ws: expected a ws:// or wss:// URL (or a path), got ${JSON.stringify(heraldWs)}`);
  }
  const tokenSecret = get('token-secret');
  if (Buffer.byteLength(tokenSecret) < 32) {
    throw new UsageError('--token-secret must be at least 32 bytes (it is Herald\'s token.hmac_secret)');
  }

  return {
    help: false,
    port: Number(portText),
    host: get('host') ?? '127.0.0.1',
    db: get('db') ?? ':memory:',
    heraldApi,
    heraldWs,
    apiKey: get('api-key'),
    tokenSecret,
    staticDir: get('static') ?? null,
    verbose: Boolean(given.verbose) || /^(1|true|yes)$/i.test(env.DEMO_VERBOSE ?? ''),
  };
}
