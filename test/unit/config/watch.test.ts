/** The file watch (config/watch.ts): when it asks for a reload, and when it does not. */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { fileDigest } from '../../../src/config/files.js';
import { startFileWatch, type FileChange, type FileWatch } from '../../../src/config/watch.js';

/** An in-memory folder: path → content; a missing path throws like ENOENT. */
function folder(initial: Record<string, string>): {
  files: Map<string, string>;
  readFile: (p: string) => Buffer;
  digests: () => Record<string, string>;
} {
  const files = new Map(Object.entries(initial));
  return {
    files,
    readFile: (p) => {
      const c = files.get(p);
      if (c === undefined) throw Object.assign(new Error(`ENOENT: ${p}`), { code: 'ENOENT' });
      return Buffer.from(c);
    },
    digests: () => Object.fromEntries([...files].map(([p, c]) => [p, fileDigest(Buffer.from(c))])),
  };
}

const watches: FileWatch[] = [];
afterEach(() => {
  for (const w of watches.splice(0)) w.stop();
  vi.useRealTimers();
});

/**
 * A watch over `dir` whose "app" serves the digests it loaded; `outcome` decides what a reload does:
 * `apply` loads the files as they are, `refuse` keeps the old config.
 */
function setup(
  dir: ReturnType<typeof folder>,
  outcome: () => 'apply' | 'refuse' = () => 'apply',
): { watch: FileWatch; calls: FileChange[]; errors: unknown[]; serving: () => Record<string, string> } {
  let serving = dir.digests();
  const calls: FileChange[] = [];
  const errors: unknown[] = [];
  const watch = startFileWatch(
    3_600_000,
    () => serving,
    (change) => {
      calls.push(change);
      if (outcome() === 'apply') serving = dir.digests();
      return Promise.resolve(outcome() === 'apply' ? serving : undefined);
    },
    { readFile: dir.readFile, onError: (e) => errors.push(e) },
  );
  watches.push(watch);
  return { watch, calls, errors, serving: () => serving };
}

describe('startFileWatch', () => {
  it('asks for nothing while the files are what the serving config read', async () => {
    const dir = folder({ '/c/portcullis.yaml': 'a', '/c/server.crt': 'cert-1' });
    const { watch, calls } = setup(dir);
    await watch.check();
    await watch.check();
    expect(calls).toEqual([]);
  });

  it('asks once for a reload naming the changed files, sorted; after it applied them, nothing more', async () => {
    const dir = folder({ '/c/portcullis.yaml': 'a', '/c/server.key': 'key-1', '/c/server.crt': 'cert-1' });
    const { watch, calls } = setup(dir);
    dir.files.set('/c/server.key', 'key-2');
    dir.files.set('/c/server.crt', 'cert-2');
    await watch.check();
    expect(calls).toEqual([{ changed: ['/c/server.crt', '/c/server.key'] }]);
    await watch.check();
    await watch.check();
    expect(calls).toHaveLength(1);
  });

  it('after a refused reload, does not ask again for the same contents; asks again when a file changes again', async () => {
    const dir = folder({ '/c/portcullis.yaml': 'a', '/c/server.key': 'key-1', '/c/server.crt': 'cert-1' });
    let refuse = true;
    const { watch, calls } = setup(dir, () => (refuse ? 'refuse' : 'apply'));
    // A renewal half done: the new key, the old certificate (the reload refuses the pair).
    dir.files.set('/c/server.key', 'key-2');
    await watch.check();
    await watch.check();
    await watch.check();
    expect(calls).toEqual([{ changed: ['/c/server.key'] }]);
    // The certificate follows: the pair matches now.
    dir.files.set('/c/server.crt', 'cert-2');
    refuse = false;
    await watch.check();
    expect(calls).toEqual([{ changed: ['/c/server.key'] }, { changed: ['/c/server.crt', '/c/server.key'] }]);
    await watch.check();
    expect(calls).toHaveLength(2);
  });

  it('counts a file that can no longer be read as changed (the reload then refuses it, naming the key)', async () => {
    const dir = folder({ '/c/portcullis.yaml': 'a', '/c/ca.crt': 'ca' });
    const { watch, calls } = setup(dir, () => 'refuse');
    dir.files.delete('/c/ca.crt');
    await watch.check();
    expect(calls).toEqual([{ changed: ['/c/ca.crt'] }]);
  });

  it('a file put back as it was, after a refused reload, is quiet again and a later change is seen', async () => {
    const dir = folder({ '/c/portcullis.yaml': 'a', '/c/crl.pem': 'crl-1' });
    let refuse = true;
    const { watch, calls } = setup(dir, () => (refuse ? 'refuse' : 'apply'));
    dir.files.set('/c/crl.pem', 'garbage');
    await watch.check();
    dir.files.set('/c/crl.pem', 'crl-1');
    await watch.check();
    expect(calls).toHaveLength(1);
    // The same bad content again, later: it is a new change, tried again.
    dir.files.set('/c/crl.pem', 'garbage');
    await watch.check();
    expect(calls).toHaveLength(2);
    refuse = false;
    dir.files.set('/c/crl.pem', 'crl-2');
    await watch.check();
    expect(calls).toHaveLength(3);
  });

  it('never overlaps looks: a look during a running reload does nothing', async () => {
    const dir = folder({ '/c/portcullis.yaml': 'a' });
    let finish: () => void = () => undefined;
    let calls = 0;
    const watch = startFileWatch(
      3_600_000,
      () => ({ '/c/portcullis.yaml': fileDigest(Buffer.from('a')) }),
      () => {
        calls++;
        return new Promise((r) => (finish = () => r(undefined)));
      },
      { readFile: dir.readFile, onError: () => undefined },
    );
    watches.push(watch);
    dir.files.set('/c/portcullis.yaml', 'b');
    const first = watch.check();
    await watch.check();
    expect(calls).toBe(1);
    finish();
    await first;
  });

  it('reports a failure of a look and goes on with the next one', async () => {
    const dir = folder({ '/c/portcullis.yaml': 'a' });
    let broken = true;
    const errors: unknown[] = [];
    const calls: FileChange[] = [];
    const watch = startFileWatch(
      3_600_000,
      () => {
        if (broken) throw new Error('serving config unavailable');
        return { '/c/portcullis.yaml': fileDigest(Buffer.from('old')) };
      },
      (c) => {
        calls.push(c);
        return Promise.resolve(undefined);
      },
      { readFile: dir.readFile, onError: (e) => errors.push(e) },
    );
    watches.push(watch);
    await watch.check();
    expect(errors).toHaveLength(1);
    broken = false;
    await watch.check();
    expect(calls).toEqual([{ changed: ['/c/portcullis.yaml'] }]);
  });

  it('looks every interval on its own, and stops looking when stopped', async () => {
    vi.useFakeTimers();
    const dir = folder({ '/c/portcullis.yaml': 'a' });
    let reads = 0;
    const watch = startFileWatch(
      1_000,
      () => ({ '/c/portcullis.yaml': fileDigest(Buffer.from('a')) }),
      () => Promise.resolve(undefined),
      {
        readFile: (p) => {
          reads++;
          return dir.readFile(p);
        },
        onError: () => undefined,
      },
    );
    await vi.advanceTimersByTimeAsync(3_500);
    expect(reads).toBe(3);
    watch.stop();
    await vi.advanceTimersByTimeAsync(5_000);
    expect(reads).toBe(3);
  });
});
