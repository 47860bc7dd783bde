/** Runs the built `portcullis` binary (dist/, built by test/global-setup.ts) as a child process. */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { createServer, type AddressInfo } from 'node:net';
import { resolve } from 'node:path';

export const BIN = resolve('dist/src/main.js');

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `portcullis ...args` to completion (bounded by `timeoutMs`). */
export function runCli(
  args: readonly string[],
  opts: SpawnOptions & { timeoutMs?: number } = {},
): Promise<RunResult> {
  return new Promise((resolvePromise) => {
    const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr?.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 20_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolvePromise({ code, stdout, stderr });
    });
  });
}

/** Starts `portcullis ...args` and leaves it running; the caller kills it. */
export function spawnCli(args: readonly string[], opts: SpawnOptions = {}): ChildProcess {
  return spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
}

/** One JSON log line of the gateway (stdout). */
export type LogLine = Record<string, unknown>;

/** How a child process ended. */
export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A running `portcullis start` child: its JSON log lines so far, its stderr so far, and its exit. */
export interface StartedBinary {
  readonly child: ChildProcess;
  /** Every JSON line written to stdout so far, in order (non-JSON lines are skipped). */
  readonly lines: LogLine[];
  readonly stderr: () => string;
  readonly exited: Promise<Exit>;
  /** The first log line (seen or to come) `pred` accepts; rejects if the child exits first or after `ms`. */
  readonly waitFor: (pred: (l: LogLine) => boolean, what: string, ms?: number) => Promise<LogLine>;
}

/** Starts `node [nodeArgs] dist/src/main.js start --config file` and parses its stdout log lines as they come. */
export function startBinary(
  file: string,
  opts: { nodeArgs?: readonly string[]; env?: NodeJS.ProcessEnv } = {},
): StartedBinary {
  const child = spawn(process.execPath, [...(opts.nodeArgs ?? []), BIN, 'start', '--config', file], {
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(opts.env ? { env: opts.env } : {}),
  });
  const lines: LogLine[] = [];
  const waiters = new Set<() => void>();
  let stderr = '';
  let buf = '';
  let gone = false;
  const exited = new Promise<Exit>((res) => child.once('exit', (code, signal) => res({ code, signal })));
  void exited.then(() => {
    gone = true;
    for (const w of waiters) w();
  });
  child.stderr?.on('data', (c: Buffer) => (stderr += c.toString()));
  child.stdout?.on('data', (c: Buffer) => {
    buf += c.toString();
    let nl: number;
    while ((nl = buf.indexOf('\n')) !== -1) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (!line.startsWith('{')) continue;
      lines.push(JSON.parse(line) as LogLine);
      for (const w of waiters) w();
    }
  });
  const waitFor = (pred: (l: LogLine) => boolean, what: string, ms = 15_000): Promise<LogLine> =>
    new Promise((res, rej) => {
      const timer = setTimeout(() => {
        waiters.delete(check);
        rej(new Error(`no ${what} within ${ms} ms:\n${stderr}`));
      }, ms);
      timer.unref();
      function check(): void {
        const found = lines.find(pred);
        if (found === undefined && !gone) return;
        waiters.delete(check);
        clearTimeout(timer);
        if (found !== undefined) res(found);
        else rej(new Error(`gateway exited (${String(child.exitCode)}) before ${what}:\n${stderr}`));
      }
      waiters.add(check);
      check();
    });
  return { child, lines, stderr: () => stderr, exited, waitFor };
}

/** The port of listener `name`'s `listening` line, and the admin port when `admin` (waiting for both). */
export async function listeningPorts(
  run: StartedBinary,
  opts: { name?: string; admin?: boolean; ms?: number } = {},
): Promise<{ port: number; adminPort: number | undefined }> {
  const name = opts.name ?? 'main';
  const [main, admin] = await Promise.all([
    run.waitFor((l) => l.msg === 'listening' && l.listener === name, `listening line of ${name}`, opts.ms),
    opts.admin ? run.waitFor((l) => l.msg === 'admin listening', 'admin listening line', opts.ms) : undefined,
  ]);
  return { port: main.port as number, adminPort: admin?.port as number | undefined };
}

/** SIGKILLs every child in `children` still running (for afterAll: nothing outlives its test file). */
export function killAll(children: Iterable<ChildProcess>): void {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
}

/** A port on 127.0.0.1 with nothing listening (bound, then released): for a child to bind, or to find dead. */
export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}
