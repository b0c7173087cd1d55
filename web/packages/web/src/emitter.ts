//! Listener sets that never let a listener's exception escape into the caller.

/** Calls `fn`, reporting an exception to `onError` instead of throwing. */
export function safely(fn: () => void, onError?: (e: unknown) => void): void {
  try {
    fn();
  } catch (e) {
    try {
      onError?.(e);
    } catch {
      // An error reporter that throws has nowhere left to report to.
    }
  }
}

/** A typed event emitter; a throwing listener never stops the others. */
export class Emitter<Events extends object> {
  readonly #listeners = new Map<keyof Events, Set<(event: never) => void>>();

  readonly #onListenerError: ((e: unknown, event: keyof Events) => void) | undefined;

  constructor(onListenerError?: (e: unknown, event: keyof Events) => void) {
    this.#onListenerError = onListenerError;
  }

  on<K extends keyof Events>(event: K, listener: (event: Events[K]) => void): () => void {
    let set = this.#listeners.get(event);
    if (!set) this.#listeners.set(event, (set = new Set()));
    set.add(listener as (event: never) => void);
    return () => void set.delete(listener as (event: never) => void);
  }

  emit<K extends keyof Events>(event: K, value: Events[K]): void {
    const set = this.#listeners.get(event);
    if (!set) return;
    for (const l of [...set]) safely(() => (l as (e: Events[K]) => void)(value), (e) => this.#onListenerError?.(e, event));
  }

  clear(): void {
    this.#listeners.clear();
  }
}

/** An observable value with `subscribe`/`getSnapshot`, for `useSyncExternalStore`. */
export class Store<T> {
  readonly #listeners = new Set<() => void>();

  #value: T;

  constructor(value: T) {
    this.#value = value;
  }

  getSnapshot = (): T => this.#value;

  subscribe = (listener: () => void): (() => void) => {
    this.#listeners.add(listener);
    return () => void this.#listeners.delete(listener);
  };

  /** Replaces the value and notifies when it changed (by shallow comparison). */
  set(next: T): void {
    if (shallowEqual(this.#value, next)) return;
    this.#value = next;
    for (const l of [...this.#listeners]) safely(l);
  }

  clear(): void {
    this.#listeners.clear();
  }
}

function shallowEqual<T>(a: T, b: T): boolean {
  if (Object.is(a, b)) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  const ka = Object.keys(a) as (keyof T)[];
  if (ka.length !== Object.keys(b).length) return false;
  return ka.every((k) => {
    const x = a[k];
    const y = b[k];
    if (Object.is(x, y)) return true;
    // One level down, for values such as `reason: {code, message}`.
    return typeof x === 'object' && typeof y === 'object' && x !== null && y !== null && JSON.stringify(x) === JSON.stringify(y);
  });
}
