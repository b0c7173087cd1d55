//! Reference counts: the first holder of a key acquires it, the last one to leave releases it.

/**
 * Counts holders per key. `add` reports whether the key was new (subscribe now) and
 * `remove` whether it is gone (unsubscribe now); removing a holder twice is harmless,
 * which is what makes React's StrictMode double mount safe.
 */
export class RefCount<K, H> {
  private readonly holders = new Map<K, Set<H>>();

  /** Adds `holder` under `key`; true when `key` had no holder before. */
  add(key: K, holder: H): boolean {
    let set = this.holders.get(key);
    const fresh = !set;
    if (!set) this.holders.set(key, (set = new Set()));
    set.add(holder);
    return fresh;
  }

  /** Removes `holder`; true when it was the last holder of `key`. */
  remove(key: K, holder: H): boolean {
    const set = this.holders.get(key);
    if (!set || !set.delete(holder)) return false;
    if (set.size > 0) return false;
    this.holders.delete(key);
    return true;
  }

  /** The holders of `key`. */
  get(key: K): ReadonlySet<H> {
    return this.holders.get(key) ?? new Set();
  }

  keys(): K[] {
    return [...this.holders.keys()];
  }

  /** Forgets every holder of every key. */
  clear(): void {
    this.holders.clear();
  }

  has(key: K): boolean {
    return this.holders.has(key);
  }

  get size(): number {
    return this.holders.size;
  }
}
