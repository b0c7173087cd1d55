// The demo's SQLite database: the `applications` entities and the transactional outbox.
//
// Every change writes the entity and its outbox rows in one transaction, so an event
// exists exactly when its change does; the publisher (outbox.mjs) sends the rows to
// Herald afterwards, in `seq` order.

import crypto from 'node:crypto';
import Database from 'better-sqlite3';
import { canSee, canSeeRestricted } from './access.mjs';

/** An error with an HTTP status, answered as `{"error": message, ...extra}`. */
export class HttpError extends Error {
  constructor(status, message, extra = {}) {
    super(message);
    this.status = status;
    this.extra = extra;
  }
}

export const ENTITY_TYPE = 'applications';
export const STATUSES = Object.freeze(['active', 'paused', 'retired']);
export const MAX_NAME_CHARS = 100;

/** The audiences of Herald's entity convention. */
const PUBLIC = 'public';
const RESTRICTED = 'restricted';
/** Where an entity's events go: a public entity's to both audiences (a user who may see
 * restricted entities reads only the `$` audience, so it must carry every event), a
 * restricted entity's to the restricted audience only. */
const audiencesOf = (restricted) => (restricted ? [RESTRICTED] : [PUBLIC, RESTRICTED]);

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS applications (
  id         TEXT PRIMARY KEY,
  name       TEXT NOT NULL,
  owner      TEXT NOT NULL,
  status     TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'paused', 'retired')),
  restricted INTEGER NOT NULL DEFAULT 0 CHECK (restricted IN (0, 1)),
  version    INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  updated_by TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
  seq        INTEGER PRIMARY KEY AUTOINCREMENT,
  event      TEXT NOT NULL,
  audiences  TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  sent_at    INTEGER,
  attempts   INTEGER NOT NULL DEFAULT 0,
  last_error TEXT
);
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (seq) WHERE sent_at IS NULL;
`;

function toEntity(row) {
  return {
    id: row.id,
    name: row.name,
    owner: row.owner,
    status: row.status,
    restricted: row.restricted === 1,
    version: row.version,
    created_at: row.created_at,
    updated_at: row.updated_at,
    updated_by: row.updated_by,
  };
}

/** A short random id that fits Herald's entity id rule (A-Z, a-z, 0-9, _, -). */
function newId() {
  return crypto.randomBytes(6).toString('base64url');
}

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

/** Checks a request body's fields; returns the ones given, or throws a 400. */
function readFields(body, { allowed, required = [] }) {
  if (!isObject(body)) throw new HttpError(400, 'the body must be a JSON object');
  for (const key of Object.keys(body)) {
    if (!allowed.includes(key)) {
      throw new HttpError(400, `unknown field ${JSON.stringify(key)}: expected ${allowed.join(', ')}`);
    }
  }
  for (const key of required) {
    if (body[key] === undefined) throw new HttpError(400, `${key} is required`);
  }
  const out = {};
  if (body.name !== undefined) {
    if (typeof body.name !== 'string') throw new HttpError(400, 'name must be a string');
    const name = body.name.trim();
    const chars = [...name].length;
    if (chars < 1 || chars > MAX_NAME_CHARS) {
      throw new HttpError(400, `name must be 1–${MAX_NAME_CHARS} characters`);
    }
    out.name = name;
  }
  if (body.status !== undefined) {
    if (!STATUSES.includes(body.status)) {
      throw new HttpError(400, `status must be one of ${STATUSES.join(', ')}`);
    }
    out.status = body.status;
  }
  if (body.restricted !== undefined) {
    if (typeof body.restricted !== 'boolean') throw new HttpError(400, 'restricted must be true or false');
    out.restricted = body.restricted;
  }
  if (body.version !== undefined) {
    if (!Number.isSafeInteger(body.version) || body.version < 1) {
      throw new HttpError(400, 'version must be a positive integer');
    }
    out.version = body.version;
  }
  return out;
}

/** The SQLite store. Create with {@link openStore}. */
export class Store {
  constructor(file) {
    this.db = new Database(file);
    this.db.pragma('busy_timeout = 5000');
    if (file !== ':memory:' && file !== '') this.db.pragma('journal_mode = WAL');
    this.db.exec(SCHEMA);
    // A random id of this database, part of every idempotency key: a fresh database
    // (`:memory:` after a restart) numbers its outbox from 1 again, and must not collide
    // with the keys Herald still remembers from the previous one.
    this.db.prepare("INSERT OR IGNORE INTO meta (key, value) VALUES ('instance', ?)").run(
      crypto.randomBytes(4).toString('hex'),
    );
    this.instance = this.db.prepare("SELECT value FROM meta WHERE key = 'instance'").pluck().get();
    /** Called after every committed change that wrote outbox rows. */
    this.onCommit = () => {};

    const q = (sql) => this.db.prepare(sql);
    this.sql = {
      listAll: q('SELECT * FROM applications ORDER BY created_at DESC, rowid DESC'),
      listPublic: q('SELECT * FROM applications WHERE restricted = 0 ORDER BY created_at DESC, rowid DESC'),
      get: q('SELECT * FROM applications WHERE id = ?'),
      insert: q(`INSERT INTO applications
        (id, name, owner, status, restricted, version, created_at, updated_at, updated_by)
        VALUES (@id, @name, @owner, @status, @restricted, @version, @created_at, @updated_at, @updated_by)`),
      update: q(`UPDATE applications SET name = @name, status = @status, restricted = @restricted,
        version = @version, updated_at = @updated_at, updated_by = @updated_by
        WHERE id = @id AND version = @version - 1`),
      delete: q('DELETE FROM applications WHERE id = ? AND version = ?'),
      enqueue: q('INSERT INTO outbox (event, audiences, created_at) VALUES (?, ?, ?)'),
      nextUnsent: q('SELECT seq, event, audiences FROM outbox WHERE sent_at IS NULL ORDER BY seq LIMIT 1'),
      markSent: q('UPDATE outbox SET sent_at = ?, attempts = attempts + 1, last_error = NULL WHERE seq = ?'),
      markFailed: q('UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE seq = ?'),
      counts: q(`SELECT COUNT(*) FILTER (WHERE sent_at IS NULL) AS pending,
        COUNT(*) FILTER (WHERE sent_at IS NOT NULL) AS sent FROM outbox`),
    };
    this.tx = (fn) => this.db.transaction(fn);
  }

  /** Appends one outbox row: the entity event for `entity` and the audiences to send it to. */
  enqueue(action, actor, entity, timestamp, audiences) {
    const event = {
      entity_type: ENTITY_TYPE,
      entity_id: entity.id,
      action,
      actor,
      version: entity.version,
      timestamp,
      payload: action === 'deleted' ? null : entity,
    };
    this.sql.enqueue.run(JSON.stringify(event), JSON.stringify(audiences), timestamp);
  }

  /** The row `id` as `user` may see it, or a 404. */
  visible(user, id) {
    const row = typeof id === 'string' ? this.sql.get.get(id) : undefined;
    const entity = row && toEntity(row);
    if (!entity || !canSee(user, entity)) throw new HttpError(404, `no application ${JSON.stringify(id)}`);
    return entity;
  }

  /** Every application `user` may see, newest first. */
  list(user) {
    const rows = (canSeeRestricted(user) ? this.sql.listAll : this.sql.listPublic).all();
    return rows.map(toEntity);
  }

  get(user, id) {
    return this.visible(user, id);
  }

  create(user, body) {
    const f = readFields(body, { allowed: ['name', 'status', 'restricted'], required: ['name'] });
    if (f.restricted && !canSeeRestricted(user)) {
      throw new HttpError(403, `${user} may not create restricted applications`);
    }
    const now = Date.now();
    const entity = {
      id: newId(),
      name: f.name,
      owner: user,
      status: f.status ?? 'active',
      restricted: f.restricted ?? false,
      version: 1,
      created_at: now,
      updated_at: now,
      updated_by: user,
    };
    this.tx(() => {
      this.sql.insert.run({ ...entity, restricted: entity.restricted ? 1 : 0 });
      this.enqueue('created', user, entity, now, audiencesOf(entity.restricted));
    })();
    this.onCommit();
    return entity;
  }

  patch(user, id, body) {
    const f = readFields(body, { allowed: ['version', 'name', 'status', 'restricted'], required: ['version'] });
    const changed = this.tx(() => {
      const current = this.visible(user, id);
      if (f.restricted === true && !current.restricted && !canSeeRestricted(user)) {
        throw new HttpError(403, `${user} may not make applications restricted`);
      }
      if (f.version !== current.version) {
        throw new HttpError(
          409,
          `version ${f.version} is stale: the application is at version ${current.version} (updated by ${current.updated_by})`,
          { current },
        );
      }
      const next = {
        ...current,
        name: f.name ?? current.name,
        status: f.status ?? current.status,
        restricted: f.restricted ?? current.restricted,
      };
      if (next.name === current.name && next.status === current.status && next.restricted === current.restricted) {
        return { entity: current, wrote: false }; // nothing changed: no new version, no event
      }
      const now = Date.now();
      Object.assign(next, { version: current.version + 1, updated_at: now, updated_by: user });
      const info = this.sql.update.run({ ...next, restricted: next.restricted ? 1 : 0 });
      if (info.changes !== 1) throw new Error(`application ${id} changed during its own transaction`);
      if (current.restricted === next.restricted) {
        this.enqueue('updated', user, next, now, audiencesOf(next.restricted));
      } else {
        // The restricted audience sees every version; the public one sees the entity
        // disappear (now restricted) or appear (now public).
        this.enqueue('updated', user, next, now, [RESTRICTED]);
        this.enqueue(next.restricted ? 'deleted' : 'created', user, next, now, [PUBLIC]);
      }
      return { entity: next, wrote: true };
    })();
    if (changed.wrote) this.onCommit();
    return changed.entity;
  }

  /** Deletes `id`; with `expectedVersion`, only if it is still that version (else 409). */
  remove(user, id, expectedVersion) {
    const result = this.tx(() => {
      const current = this.visible(user, id);
      if (expectedVersion !== undefined && expectedVersion !== current.version) {
        throw new HttpError(
          409,
          `version ${expectedVersion} is stale: the application is at version ${current.version} (updated by ${current.updated_by})`,
          { current },
        );
      }
      this.sql.delete.run(id, current.version);
      const gone = { ...current, version: current.version + 1 };
      this.enqueue('deleted', user, gone, Date.now(), audiencesOf(current.restricted));
      return { id, version: gone.version };
    })();
    this.onCommit();
    return result;
  }

  /** The oldest unsent outbox row: `{seq, event (JSON text), audiences (array)}`. */
  nextUnsent() {
    const row = this.sql.nextUnsent.get();
    return row && { seq: row.seq, event: row.event, audiences: JSON.parse(row.audiences) };
  }

  markSent(seq) {
    this.sql.markSent.run(Date.now(), seq);
  }

  markFailed(seq, error) {
    this.sql.markFailed.run(String(error).slice(0, 500), seq);
  }

  /** `{pending, sent}`: outbox rows not yet / already accepted by Herald. */
  outboxCounts() {
    const { pending, sent } = this.sql.counts.get();
    return { pending, sent };
  }

  close() {
    if (this.db.open) this.db.close();
  }
}

export function openStore(file) {
  return new Store(file);
}
