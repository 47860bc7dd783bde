/**
 * The file watch: every `reload.checkFilesSeconds`, the files the serving config was made from are read
 * again and compared with what was read at load (RuntimeConfig.files). A difference asks for a reload,
 * exactly what SIGHUP does, so a certificate renewed in place (cert-manager, certbot, a cron that refreshes
 * the CRL) is served without anyone sending a signal. ghostunnel's `--timed-reload` works the same way.
 *
 * Why polling and content digests, not fs.watch: a Kubernetes Secret volume swaps a `..data` symlink, editors
 * and `mv` replace inodes, and inotify events are lost on network file systems; reading a few KB of PEM
 * every minute sees all of them. Why not react at once: a renewal that writes the key and then the
 * certificate would be looked at in between; a refused reload is harmless (the old pair keeps serving) and
 * the next look, once both files match, applies them.
 *
 * A set of contents that made a reload fail is not tried again until a file changes again, so a broken
 * file gives one refusal (logged and counted by the reload), not one a minute.
 */
import { readFileSync } from 'node:fs';
import { fileDigest } from './files.js';

/** What a look found different: the files whose content changed or that can no longer be read. */
export interface FileChange {
  /** Absolute paths, sorted. */
  readonly changed: readonly string[];
}

export interface FileWatchDeps {
  /** Reads a file (throws when it cannot). Default: `readFileSync`. */
  readonly readFile?: (path: string) => Buffer;
  /** Logs an unexpected failure of a look (the watch goes on). */
  readonly onError: (err: unknown) => void;
}

export interface FileWatch {
  /** One look now (tests, and the timer). Resolves when a reload it asked for has finished. */
  check(): Promise<void>;
  stop(): void;
}

/**
 * Starts the watch. `serving()` gives the files of the config serving now (path → digest at load);
 * `reload(change)` does what SIGHUP does and resolves when it has finished — with the files of the config
 * that serves after it, or `undefined` when it was refused (or when this process cannot tell, as in a
 * cluster primary). Looks never overlap: a look that finds a reload still running waits for the next tick.
 */
export function startFileWatch(
  intervalMs: number,
  serving: () => Readonly<Record<string, string>>,
  reload: (change: FileChange) => Promise<Readonly<Record<string, string>> | undefined>,
  deps: FileWatchDeps,
): FileWatch {
  const readFile = deps.readFile ?? ((p: string) => readFileSync(p));
  /** Contents a reload was already asked for (path → digest): not asked again until something differs. */
  let tried: Readonly<Record<string, string>> | undefined;
  let busy = false;
  let stopped = false;

  const digestNow = (path: string): string => {
    try {
      return fileDigest(readFile(path));
    } catch {
      return 'unreadable';
    }
  };

  const check = async (): Promise<void> => {
    if (busy || stopped) return;
    busy = true;
    try {
      const expected = serving();
      const now: Record<string, string> = {};
      const changed: string[] = [];
      for (const [path, digest] of Object.entries(expected)) {
        now[path] = digestNow(path);
        if (now[path] !== digest) changed.push(path);
      }
      if (changed.length === 0) {
        tried = undefined;
        return;
      }
      if (tried !== undefined && Object.entries(now).every(([p, d]) => tried?.[p] === d)) return;
      tried = now;
      const after = await reload({ changed: changed.sort() });
      // A reload that applied the files as they are now: nothing is left to try.
      if (after !== undefined && Object.entries(now).every(([p, d]) => after[p] === d)) tried = undefined;
    } catch (err) {
      deps.onError(err);
    } finally {
      busy = false;
    }
  };

  const timer = setInterval(() => void check(), intervalMs);
  timer.unref();
  return {
    check,
    stop(): void {
      stopped = true;
      clearInterval(timer);
    },
  };
}
