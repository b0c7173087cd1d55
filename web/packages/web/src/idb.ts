//! A minimal promise wrapper over IndexedDB: one database per scope, two stores.

const VERSION = 1;
/** Channel positions, keyed by channel. */
export const POSITIONS = 'positions';
/** Outbox items, keyed by an auto-incremented sequence (the send order). */
export const OUTBOX = 'outbox';

/** Opens (creating on first use) the scope's database; null where IndexedDB is unavailable. */
export function openDb(scope: string): Promise<IDBDatabase | null> {
  return new Promise((resolve) => {
    let req: IDBOpenDBRequest;
    try {
      if (typeof indexedDB === 'undefined') return resolve(null);
      req = indexedDB.open(`herald:${scope}`, VERSION);
    } catch {
      return resolve(null);
    }
    req.onupgradeneeded = () => {
      const db = req.result;
      if (!db.objectStoreNames.contains(POSITIONS)) db.createObjectStore(POSITIONS, { keyPath: 'channel' });
      if (!db.objectStoreNames.contains(OUTBOX)) db.createObjectStore(OUTBOX, { keyPath: 'seq', autoIncrement: true });
    };
    req.onsuccess = () => {
      const db = req.result;
      // Another tab upgrading the schema must not be blocked by this one.
      db.onversionchange = () => db.close();
      resolve(db);
    };
    req.onerror = () => resolve(null);
    req.onblocked = () => resolve(null);
  });
}

/** A request's result as a promise. */
export function done<T>(req: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

/**
 * Runs `fn` in one transaction and resolves with its result once the transaction has
 * committed (durably for writes: an outbox item must survive a crash right after).
 */
export function transact<T>(
  db: IDBDatabase,
  store: string,
  mode: IDBTransactionMode,
  fn: (s: IDBObjectStore) => Promise<T>,
): Promise<T> {
  return new Promise((resolve, reject) => {
    let tx: IDBTransaction;
    try {
      tx = mode === 'readwrite' ? db.transaction(store, mode, { durability: 'strict' }) : db.transaction(store, mode);
    } catch (e) {
      return reject(e);
    }
    let result: T;
    fn(tx.objectStore(store)).then(
      (r) => {
        result = r;
      },
      (e) => {
        try {
          tx.abort();
        } catch {
          // Already finished.
        }
        reject(e);
      },
    );
    tx.oncomplete = () => resolve(result);
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error ?? new Error('transaction aborted'));
  });
}
