// The demo backend's REST API, as the pages use it.

export interface Application {
  id: string;
  name: string;
  owner: string;
  status: 'active' | 'paused' | 'retired';
  restricted: boolean;
  version: number;
  created_at: number;
  updated_at: number;
  updated_by: string;
}

export interface DemoConfig {
  heraldUrl: string;
  user: string | null;
  users: string[];
  canSeeRestricted: boolean;
}

/** An API failure with the server's message (and, for 409, the current entity). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly current?: Application,
  ) {
    super(message);
  }
}

async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  const res = await fetch(path, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  const data = text ? (JSON.parse(text) as Record<string, unknown>) : {};
  if (!res.ok) throw new ApiError(res.status, String(data.error ?? res.statusText), data.current as Application | undefined);
  return data as T;
}

export const api = {
  config: () => call<DemoConfig>('GET', '/config.json'),
  list: () => call<Application[]>('GET', '/api/applications'),
  get: async (id: string) => {
    try {
      return await call<Application>('GET', `/api/applications/${encodeURIComponent(id)}`);
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) return null;
      throw e;
    }
  },
  create: (body: Pick<Application, 'name' | 'status' | 'restricted'>) => call<Application>('POST', '/api/applications', body),
  update: (id: string, body: Partial<Pick<Application, 'name' | 'status' | 'restricted'>> & { version: number }) =>
    call<Application>('PATCH', `/api/applications/${encodeURIComponent(id)}`, body),
  remove: (id: string) => call<{ id: string; version: number }>('DELETE', `/api/applications/${encodeURIComponent(id)}`),
};
