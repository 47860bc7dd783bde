/**
 * A real Dask cluster for interop tests: Debian's python3-distributed (2022.12), run by /usr/bin/python3 —
 * not whatever `python3` is first on the PATH (a pyenv interpreter there does not see Debian's packages;
 * CONVENTIONS.md, known traps). Each Python child runs isolated (`-I`: no PYTHON* variables, no user
 * site-packages), in its own process group, watches its stdin and exits when it closes, and is killed
 * (the whole group, SIGKILL) by `stop()` — so a crashed test run leaves no scheduler behind.
 *
 * - {@link startDaskCluster}: a scheduler and one worker on loopback, port 0, `tcp://` or `tls://` with
 *   `Security(require_encryption=True)`; resolves once the worker has registered with the scheduler.
 * - {@link runDaskClient}: a Dask client script (bounded by a timeout) that connects to an address, runs a
 *   submit and a map of 300 items, and prints the results as one JSON line.
 * - {@link issueClusterCert}: a certificate for a scheduler or a worker. Dask uses one certificate per role
 *   both to listen and to connect (the scheduler connects to workers, workers to the scheduler), so it needs
 *   both serverAuth and clientAuth in its extended key usage: OpenSSL checks the purpose on each side.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { isIP } from 'node:net';
import forge from 'node-forge';
import type { CertAndKey } from '../../src/certs/pki.js';

/** The interpreter that sees Debian's python3-distributed. */
export const SYSTEM_PYTHON = '/usr/bin/python3';

/** Why the Dask interop tests cannot run here, or undefined when they can. */
export function daskUnavailableReason(): string | undefined {
  const r = spawnSync(
    SYSTEM_PYTHON,
    ['-I', '-c', 'import distributed, dask; print(distributed.__version__)'],
    {
      encoding: 'utf8',
      timeout: 60_000,
    },
  );
  if (r.error)
    return `${SYSTEM_PYTHON} cannot be run (${r.error.message}); install python3-distributed and python3-dask`;
  if (r.status !== 0) {
    const last = (r.stderr || r.stdout).trim().split('\n').at(-1) ?? '';
    return `${SYSTEM_PYTHON} cannot import distributed (${last}); install python3-distributed and python3-dask`;
  }
  return undefined;
}

/** The version of distributed /usr/bin/python3 imports (for the test log). */
export function daskVersion(): string {
  const r = spawnSync(SYSTEM_PYTHON, ['-I', '-c', 'import distributed; print(distributed.__version__)'], {
    encoding: 'utf8',
  });
  return r.stdout.trim();
}

/**
 * Whether /usr/bin/python3 has prometheus_client (Debian's python3-prometheus-client). Without it the
 * scheduler's /metrics still answers 200 with a Prometheus text, a single comment saying metrics are not
 * available; with it, the `dask_scheduler_*` series.
 */
export function daskHasPrometheus(): boolean {
  const r = spawnSync(SYSTEM_PYTHON, ['-I', '-c', 'import prometheus_client'], {
    encoding: 'utf8',
    timeout: 60_000,
  });
  return r.status === 0;
}

/** TLS files of one Dask process (PEM paths). */
export interface DaskTlsFiles {
  /** `tls_ca_file`: the CA the peer's certificate must chain to. */
  readonly ca: string;
  readonly cert: string;
  readonly key: string;
}

export interface DaskCluster {
  /** `tcp://127.0.0.1:port` or `tls://127.0.0.1:port`. */
  readonly schedulerAddress: string;
  readonly schedulerPort: number;
  /** The scheduler's HTTP server (/health, /metrics...), plain HTTP on loopback. */
  readonly schedulerHttpPort: number;
  /**
   * The requests the scheduler's HTTP server has answered so far, as tornado logs them:
   * `"<status> <METHOD> <uri> (<remote ip>) <ms>ms"`, e.g. `"200 GET /health (127.0.0.1) 0.52ms"`.
   */
  httpRequests(): string[];
  readonly workerAddress: string;
  /** Kills both process groups; resolves once both processes have exited. */
  stop(): Promise<void>;
}

/**
 * Prelude of every script: exit when the parent closes our stdin (the test process died or is done).
 * `os._exit` skips interpreter teardown, which can hang with Dask's threads still running.
 */
const WATCHDOG = `
import os, sys, threading
def _watch():
    try:
        sys.stdin.read()
    finally:
        os._exit(0)
threading.Thread(target=_watch, daemon=True).start()
`;

const SCHEDULER_SCRIPT = `${WATCHDOG}
import asyncio, json
from distributed import Scheduler
from distributed.security import Security
cfg = json.loads(sys.argv[1])
sec = None
if cfg.get("tls"):
    t = cfg["tls"]
    sec = Security(tls_ca_file=t["ca"], tls_scheduler_cert=t["cert"], tls_scheduler_key=t["key"], require_encryption=True)
# Every request the scheduler's HTTP server answers, as one JSON line (distributed silences tornado's
# access log; the tests assert which requests reached it).
import logging
class _HttpRequests(logging.Handler):
    def emit(self, record):
        print(json.dumps({"httpRequest": record.getMessage()}), flush=True)
_access = logging.getLogger("tornado.access")
_access.setLevel(logging.INFO)
_access.propagate = False
_access.addHandler(_HttpRequests())
async def main():
    async with Scheduler(host="127.0.0.1", port=0, protocol=cfg["protocol"], security=sec,
                         dashboard=False, dashboard_address="127.0.0.1:0") as s:
        print(json.dumps({"address": s.address, "http": s.http_server.port}), flush=True)
        while True:
            await asyncio.sleep(0.1)
            n = len(s.workers)
            if n != cfg.get("_last", -1):
                cfg["_last"] = n
                print(json.dumps({"workers": n}), flush=True)
asyncio.run(main())
`;

const WORKER_SCRIPT = `${WATCHDOG}
import asyncio, json
from distributed import Worker
from distributed.security import Security
cfg = json.loads(sys.argv[1])
sec = None
if cfg.get("tls"):
    t = cfg["tls"]
    sec = Security(tls_ca_file=t["ca"], tls_worker_cert=t["cert"], tls_worker_key=t["key"], require_encryption=True)
async def main():
    async with Worker(cfg["scheduler"], nthreads=2, host="127.0.0.1", security=sec,
                      dashboard=False, dashboard_address="127.0.0.1:0") as w:
        print(json.dumps({"address": w.address}), flush=True)
        while True:
            await asyncio.sleep(3600)
asyncio.run(main())
`;

/**
 * The client. `security`:
 * - `files`: `Security(require_encryption=True, tls_ca_file, tls_client_cert, tls_client_key)`, the
 *   configuration the README documents;
 * - `no-cert`: TLS that verifies the server but presents no certificate. Dask's own Security cannot express
 *   that (without a certificate it builds no TLS context and fails before connecting), so a subclass
 *   supplies the context: the refusal must come from the gateway, not from the client library;
 * - absent: no Security at all (plain `tcp://`).
 *
 * `direct_to_workers=False` (unless the run asks otherwise): results are gathered through the scheduler
 * connection, never from a worker's own address (loopback on the scheduler's machine, not reachable through
 * the gateway).
 */
const CLIENT_SCRIPT = `${WATCHDOG}
import json, ssl
from distributed import Client
from distributed.security import Security
cfg = json.loads(sys.argv[1])
class NoCertSecurity(Security):
    def get_connection_args(self, role):
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cfg["tls"]["ca"])
        ctx.check_hostname = False
        return {"ssl_context": ctx, "require_encryption": True, "extra_conn_args": {}}
sec = None
if cfg.get("tls"):
    t = cfg["tls"]
    if t.get("cert"):
        sec = Security(tls_ca_file=t["ca"], tls_client_cert=t["cert"], tls_client_key=t["key"], require_encryption=True)
    else:
        sec = NoCertSecurity(require_encryption=True)
def inc(x):
    return x + 1
try:
    client = Client(cfg["address"], security=sec, timeout=cfg["connectTimeoutS"],
                    direct_to_workers=cfg.get("direct", False), set_as_default=False)
    submit = client.submit(lambda x: x + 1, 1).result()
    total = sum(client.gather(client.map(inc, range(300))))
    workers = sorted(client.scheduler_info()["workers"].keys())
    print(json.dumps({"submit": submit, "mapSum": total, "workers": workers}), flush=True)
    client.close(timeout=5)
except BaseException as e:
    print(json.dumps({"error": type(e).__name__ + ": " + str(e)}), flush=True)
    sys.stdout.flush()
    os._exit(1)
os._exit(0)
`;

/** A Python child in its own process group, with its stdout read line by line. */
interface PythonChild {
  readonly child: ChildProcess;
  readonly lines: string[];
  readonly stderr: () => string;
  /** The JSON lines printed so far. */
  readonly parsed: () => Record<string, unknown>[];
  /** Resolves with the first JSON line that satisfies `pick` (rejects at timeout or exit). */
  waitFor<T>(pick: (msg: Record<string, unknown>) => T | undefined, timeoutMs: number): Promise<T>;
  readonly exited: Promise<number | null>;
  kill(): Promise<void>;
}

function spawnPython(script: string, arg: unknown): PythonChild {
  const child = spawn(SYSTEM_PYTHON, ['-I', '-u', '-c', script, JSON.stringify(arg)], {
    detached: true,
    stdio: ['pipe', 'pipe', 'pipe'],
    // A quiet, deterministic Dask: no config files from $HOME, less logging.
    env: {
      PATH: '/usr/bin:/bin',
      HOME: '/nonexistent',
      DASK_CONFIG: '/nonexistent',
      DASK_LOGGING__DISTRIBUTED: 'warning',
    },
  });
  const lines: string[] = [];
  let err = '';
  let partial = '';
  const listeners = new Set<() => void>();
  child.stdout?.setEncoding('utf8');
  child.stdout?.on('data', (chunk: string) => {
    partial += chunk;
    const parts = partial.split('\n');
    partial = parts.pop() ?? '';
    for (const l of parts) if (l.trim() !== '') lines.push(l.trim());
    for (const f of listeners) f();
  });
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => {
    // Keep the tail only: Dask can be chatty on failures.
    err = (err + chunk).slice(-20_000);
  });
  child.stdin?.on('error', () => undefined);
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code) => {
      for (const f of listeners) f();
      resolve(code);
    });
    child.once('error', () => resolve(null));
  });
  const parsed = (): Record<string, unknown>[] =>
    lines.flatMap((l) => {
      try {
        return [JSON.parse(l) as Record<string, unknown>];
      } catch {
        return [];
      }
    });
  return {
    child,
    lines,
    stderr: () => err,
    parsed,
    waitFor<T>(pick: (msg: Record<string, unknown>) => T | undefined, timeoutMs: number): Promise<T> {
      return new Promise<T>((resolve, reject) => {
        const check = (): void => {
          for (const m of parsed()) {
            const v = pick(m);
            if (v !== undefined) {
              done();
              resolve(v);
              return;
            }
          }
          if (child.exitCode !== null || child.signalCode !== null) {
            done();
            reject(
              new Error(
                `python exited (${child.exitCode ?? child.signalCode}) before it was ready:\n${err.slice(-3_000)}`,
              ),
            );
          }
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error(`python not ready after ${timeoutMs} ms:\n${err.slice(-3_000)}`));
        }, timeoutMs);
        const done = (): void => {
          clearTimeout(timer);
          listeners.delete(check);
        };
        listeners.add(check);
        check();
      });
    },
    exited,
    async kill() {
      if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
        try {
          // The whole group: Dask may have started helper processes.
          process.kill(-child.pid, 'SIGKILL');
        } catch {
          child.kill('SIGKILL');
        }
      }
      child.stdin?.destroy();
      await exited;
    },
  };
}

/**
 * Starts a scheduler and one worker on 127.0.0.1. With `tls`, both run `Security(require_encryption=True)`
 * with those files (one certificate for both roles, see {@link issueClusterCert}): the scheduler then refuses
 * plain TCP and any client whose certificate does not chain to `tls.ca`.
 */
export async function startDaskCluster(
  opts: { tls?: DaskTlsFiles; readyTimeoutMs?: number } = {},
): Promise<DaskCluster> {
  const ready = opts.readyTimeoutMs ?? 60_000;
  const protocol = opts.tls ? 'tls' : 'tcp';
  const scheduler = spawnPython(SCHEDULER_SCRIPT, { protocol, ...(opts.tls ? { tls: opts.tls } : {}) });
  let worker: PythonChild | undefined;
  const stop = async (): Promise<void> => {
    await Promise.all([scheduler.kill(), worker?.kill()]);
  };
  try {
    const s = await scheduler.waitFor(
      (m) =>
        typeof m.address === 'string' && typeof m.http === 'number'
          ? { address: m.address, http: m.http }
          : undefined,
      ready,
    );
    worker = spawnPython(WORKER_SCRIPT, { scheduler: s.address, ...(opts.tls ? { tls: opts.tls } : {}) });
    const w = await worker.waitFor((m) => (typeof m.address === 'string' ? m.address : undefined), ready);
    await scheduler.waitFor(
      (m) => (typeof m.workers === 'number' && m.workers >= 1 ? true : undefined),
      ready,
    );
    const port = Number(new URL(s.address.replace(/^(tcp|tls):/, 'http:')).port);
    return {
      schedulerAddress: s.address,
      schedulerPort: port,
      schedulerHttpPort: s.http,
      httpRequests: () =>
        scheduler.parsed().flatMap((m) => (typeof m.httpRequest === 'string' ? [m.httpRequest] : [])),
      workerAddress: w,
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** What one client run printed. */
export interface DaskClientRun {
  readonly exitCode: number | null;
  /** Set when the script printed its results. */
  readonly result?: { submit: number; mapSum: number; workers: string[] };
  /** Set when the script printed an error (connection refused, timeout, TLS failure...). */
  readonly error?: string;
  readonly stderr: string;
  readonly timedOut: boolean;
}

/**
 * Runs the client script against `address` (a `tls://` address for the gateway). Never rejects: a run that
 * exceeds `timeoutMs` is killed and reported with `timedOut`.
 */
export async function runDaskClient(opts: {
  address: string;
  /** `ca` to verify the server; `cert`/`key` to present (omit them for a client without a certificate). */
  tls?: { ca: string; cert?: string; key?: string };
  /** Dask's own connect timeout (it retries until then), seconds. */
  connectTimeoutS?: number;
  /** `direct_to_workers=True`: gather results from the workers' own addresses (default False). */
  directToWorkers?: boolean;
  timeoutMs?: number;
}): Promise<DaskClientRun> {
  const py = spawnPython(CLIENT_SCRIPT, {
    address: opts.address,
    direct: opts.directToWorkers ?? false,
    connectTimeoutS: opts.connectTimeoutS ?? 10,
    ...(opts.tls ? { tls: opts.tls } : {}),
  });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    void py.kill();
  }, opts.timeoutMs ?? 90_000);
  const exitCode = await py.exited;
  clearTimeout(timer);
  await py.kill();
  let result: DaskClientRun['result'];
  let error: string | undefined;
  for (const line of py.lines) {
    try {
      const m = JSON.parse(line) as Record<string, unknown>;
      if (typeof m.error === 'string') error = m.error;
      else if (typeof m.submit === 'number' && typeof m.mapSum === 'number')
        result = { submit: m.submit, mapSum: m.mapSum, workers: (m.workers as string[] | undefined) ?? [] };
    } catch {
      // not ours
    }
  }
  return {
    exitCode,
    ...(result ? { result } : {}),
    ...(error !== undefined ? { error } : {}),
    stderr: py.stderr(),
    timedOut,
  };
}

/**
 * A scheduler or worker certificate signed by `ca`: EKU serverAuth AND clientAuth (Dask uses one certificate
 * per role to listen and to connect), IP or DNS SANs for `hosts`, valid from 5 minutes ago for `days`.
 */
export function issueClusterCert(
  ca: CertAndKey,
  opts: { commonName: string; hosts: readonly string[]; days: number },
): CertAndKey {
  const { pki, md } = forge;
  const caCert = pki.certificateFromPem(ca.certPem);
  const caKey = pki.privateKeyFromPem(ca.keyPem);
  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const keyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  const cert = pki.createCertificate();
  cert.publicKey = pki.publicKeyFromPem(publicKey.export({ type: 'spki', format: 'pem' }).toString());
  // Positive 16-byte serial (RFC 5280 §4.1.2.2).
  const serial = randomBytes(16);
  serial[0] = (serial[0] ?? 0) & 0x7f;
  cert.serialNumber = serial.toString('hex');
  const now = Date.now();
  cert.validity.notBefore = new Date(now - 5 * 60_000);
  cert.validity.notAfter = new Date(now + opts.days * 86_400_000);
  cert.setSubject([{ name: 'commonName', value: opts.commonName }]);
  cert.setIssuer(caCert.subject.attributes);
  cert.setExtensions([
    { name: 'basicConstraints', cA: false },
    { name: 'keyUsage', critical: true, digitalSignature: true, keyEncipherment: true },
    { name: 'extKeyUsage', serverAuth: true, clientAuth: true },
    {
      name: 'subjectAltName',
      altNames: opts.hosts.map((h) => (isIP(h) !== 0 ? { type: 7, ip: h } : { type: 2, value: h })),
    },
    { name: 'subjectKeyIdentifier' },
    { name: 'authorityKeyIdentifier', keyIdentifier: subjectKeyIdOf(caCert) },
  ]);
  cert.sign(caKey, md.sha256.create());
  return { certPem: pki.certificateToPem(cert), keyPem, serialHex: serial.toString('hex').toUpperCase() };
}

/** The CA's subjectKeyIdentifier bytes (what OpenSSL matches authorityKeyIdentifier against). */
function subjectKeyIdOf(cert: forge.pki.Certificate): string {
  const ext: unknown = cert.getExtension('subjectKeyIdentifier');
  if (typeof ext === 'object' && ext !== null && 'subjectKeyIdentifier' in ext) {
    const hex = ext.subjectKeyIdentifier;
    if (typeof hex === 'string' && hex !== '') return forge.util.hexToBytes(hex);
  }
  return cert.generateSubjectKeyIdentifier().getBytes();
}
