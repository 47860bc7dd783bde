/**
 * Threat model #106 (metrics cardinality), CONVENTIONS rule 8: the number of metric series does not grow
 * with the number of requests, however random their attacker-controlled parts are.
 *
 * metrics-labels.test.ts checks, with a handful of marked requests, that every label value is from a
 * closed set; this is the volume test. The real gateway (admin listener on 127.0.0.1:0) is driven first
 * by a small warm-up that sends every kind of request once, then by a flood of the same kinds — tens of
 * thousands of requests over HTTP/2 (multiplexed) and HTTP/1.1 (keep-alive) with random paths (routed,
 * 404, refused as malformed), random Host / :authority values, random methods (`FOO123`-style: over
 * HTTP/2 as :method, 405; over HTTP/1.1 refused by the parser), random SNI (or none), client certificates with
 * random CNs and OUs (some on a route allow-list, some not: 403), and refused connections (a stranger
 * CA's certificate with a random CN, no certificate, plaintext). Then `/metrics` is scraped and:
 * - every `portcullis_` series is exactly one that existed after the warm-up, and the exposition minus
 *   its numbers is byte for byte the same; two prom-client process-state families (GC kinds, open handle
 *   types) are checked against their closed sets instead (see GC_FAMILY below);
 * - no random path, host, method, SNI, CN or OU appears as a label value, nor anywhere in the text;
 * - the exposition's size grows only by the width of its numbers, and a scrape stays fast.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { connect as h2connect, type ClientHttp2Session } from 'node:http2';
import { connect as tlsConnect } from 'node:tls';
import { performance } from 'node:perf_hooks';
import forge from 'node-forge';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CertAndKey } from '../../src/certs/pki.js';
import { parseSamples, scrapeText, type Sample } from '../helpers/admin.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { mintTestPki } from '../helpers/pki.js';
import { rawTcp, type SubjectAttr } from '../helpers/tls-probe.js';

/** Flood bounds: whichever comes first. */
const MAX_REQUESTS = 100_000;
const FLOOD_MS = 18_000;
/** At least this many, or the flood proved little (the figure reached is logged; 20,000+ on an idle machine). */
const MIN_REQUESTS = 5_000;
/** Client certificates with random subjects, half of them on the `acl` route's allow-list. */
const CLIENT_CERTS = 32;
const ALLOWED_OU = 'allowed-team';
/** Concurrent streams per HTTP/2 session, and requests per session / per HTTP/1.1 agent before a new one. */
const H2_STREAMS = 32;
const H2_PER_SESSION = 400;
const H1_PER_AGENT = 100;
const H2_WORKERS = 3;
const H1_WORKERS = 4;
const ONE_SHOT_WORKERS = 2;
/** How many of each kind of random string are checked as substrings of the whole exposition. */
const TEXT_SAMPLE = 500;

/**
 * Two families of prom-client's default metrics follow the state of the process, not the requests, and
 * are not compared with the warm-up's series (every other `portcullis_` series is, exactly):
 * - the GC histogram (`portcullis_nodejs_gc_duration_seconds`, label `kind`): a kind's nine series appear
 *   the first time V8 runs that kind of collection, which a warm-up of a hundred requests may not provoke
 *   and a flood always does (minor, incremental, major). It must hold, for each kind seen, exactly its
 *   fixed set of series, and the kinds must be V8's: at most 4 × 9 series.
 * - the open handles, requests and resources by `type` (`portcullis_nodejs_active_handles{type="Socket"}`,
 *   `..._active_resources{type="Immediate"}`): the libuv / Node class names of what is open at the instant
 *   of the scrape (this test's own clients share the process), e.g. an `Immediate` present in one scrape
 *   and not in the next. Their values must be class names, never a string the requests carried, and few.
 *   (prom-client's unlabelled `_total` gauges of these families are not exposed: metrics.ts
 *   DROPPED_DEFAULT_METRICS.)
 */
const GC_FAMILY = /^portcullis_nodejs_gc_duration_seconds(_bucket|_sum|_count)?$/;
const GC_KINDS = ['minor', 'major', 'incremental', 'weakcb'];
const GC_SERIES_PER_KIND = ['0.001', '0.01', '0.1', '1', '2', '5', '+Inf'].length + 2;
const ACTIVE_FAMILY = /^portcullis_nodejs_active_(handles|requests|resources)$/;
/** Far more than the resource classes of Node 20 that a gateway process ever holds at once. */
const MAX_ACTIVE_TYPE_SERIES = 40;
const isStateFamily = (name: string): boolean => GC_FAMILY.test(name) || ACTIVE_FAMILY.test(name);
/** The metric name a line of the exposition is about (a sample line, or a HELP / TYPE comment). */
const lineName = (line: string): string => line.replace(/^# (HELP|TYPE) /, '').split(/[{ ]/)[0] ?? '';

/**
 * Client certificates signed by `ca`, one per subject, all sharing one fresh RSA key: as
 * `mintClientCertificate` (tls-probe.ts) but without an RSA keygen per certificate, which takes seconds
 * for thirty-odd certificates on a loaded 2-core machine. The gateway tells clients apart by subject
 * (and fingerprint), never by key.
 */
function mintWithSharedKey(
  ca: CertAndKey,
  subjects: readonly (readonly SubjectAttr[])[],
): { cert: string; key: string }[] {
  const caCert = forge.pki.certificateFromPem(ca.certPem);
  const caKey = forge.pki.privateKeyFromPem(ca.keyPem);
  const { privateKey, publicKey } = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    publicKeyEncoding: { type: 'spki', format: 'pem' },
  });
  // UTF8String values: forge keeps the universal tag number in valueTagClass, typed as asn1.Class.
  // eslint-disable-next-line @typescript-eslint/no-unsafe-enum-assignment -- the typings are wrong there
  const utf8 = forge.asn1.Type.UTF8 as number as forge.asn1.Class;
  return subjects.map((subject) => {
    const cert = forge.pki.createCertificate();
    const serial = randomBytes(16);
    serial[0] = ((serial[0] ?? 1) & 0x7f) | 0x01;
    cert.serialNumber = serial.toString('hex');
    cert.publicKey = forge.pki.publicKeyFromPem(publicKey);
    const now = Math.floor(Date.now() / 1000) * 1000;
    cert.validity.notBefore = new Date(now - 3_600_000);
    cert.validity.notAfter = new Date(now + 30 * 86_400_000);
    cert.setSubject(subject.map((a) => ({ shortName: a.shortName, value: a.value, valueTagClass: utf8 })));
    cert.setIssuer(caCert.subject.attributes);
    cert.setExtensions([
      { name: 'basicConstraints', cA: false },
      { name: 'keyUsage', critical: true, digitalSignature: true },
      { name: 'extKeyUsage', clientAuth: true },
      { name: 'subjectKeyIdentifier' },
      { name: 'authorityKeyIdentifier', keyIdentifier: caCert.generateSubjectKeyIdentifier().getBytes() },
    ]);
    cert.sign(caKey, forge.md.sha256.create());
    return { cert: forge.pki.certificateToPem(cert), key: privateKey };
  });
}

/** Lower-case base-36 random string of `n` characters. */
function rnd(n: number): string {
  let s = '';
  while (s.length < n) s += randomBytes(8).readBigUInt64BE().toString(36);
  return s.slice(0, n);
}

/** Every random string sent, by kind (all kept for the label check; the first TEXT_SAMPLE for the text check). */
const sent = {
  path: new Set<string>(),
  host: new Set<string>(),
  method: new Set<string>(),
  sni: new Set<string>(),
  subject: new Set<string>(),
};
type SentKind = keyof typeof sent;
function note(kind: SentKind, value: string): string {
  sent[kind].add(value);
  return value;
}
const randomSegment = (): string => note('path', `p${rnd(11)}`);
const randomHost = (): string => note('host', `h${rnd(9)}.${rnd(6)}.example`);
const randomSni = (): string => note('sni', `s${rnd(9)}.${rnd(6)}.test`);
/** `FOO123`-style: a token no method enum knows. */
const randomMethod = (): string => note('method', `M${rnd(10).toUpperCase()}`);

/** How the client reaches the listener: SNI `localhost`, a random SNI, or none (as a client dialling an IP). */
type SniMode = 'sni' | 'random-sni' | 'no-sni';
const SNI_MODES: readonly SniMode[] = ['sni', 'random-sni', 'no-sni'];
/** What a request asks for. */
type PathKind = 'open' | 'acl' | 'not-found' | 'bad-path';
const PATH_KINDS: readonly PathKind[] = ['open', 'acl', 'not-found', 'bad-path'];
/** `own`: the connection's server name (localhost with no SNI); `random`: a random host. */
type HostKind = 'own' | 'random';
const HOST_KINDS: readonly HostKind[] = ['own', 'random'];
/** HTTP/2 only: HTTP/1.1 requests with a random method are refused by the parser and close the connection. */
type MethodKind = 'GET' | 'random';

interface Spec {
  readonly path: PathKind;
  readonly host: HostKind;
  readonly method: MethodKind;
}

interface ClientCert {
  readonly cert: string;
  readonly key: string;
  readonly allowed: boolean;
}

/** The status the gateway must answer `spec` with (the form, client and method stages, pipeline/http-stages.ts). */
function expectedStatus(spec: Spec, mode: SniMode, client: ClientCert): number {
  if (spec.path === 'bad-path') return 400;
  if (spec.host === 'random' && mode !== 'no-sni') return 421;
  if (spec.path === 'not-found') return 404;
  if (spec.path === 'acl' && !client.allowed) return 403;
  // A method the gateway does not know is never forwarded (threat model #132).
  if (spec.method === 'random') return 405;
  return 200;
}

function pathOf(kind: PathKind): string {
  switch (kind) {
    case 'open':
      return `/open/${randomSegment()}/${randomSegment()}?${randomSegment()}=1`;
    case 'acl':
      return `/acl/${randomSegment()}`;
    case 'not-found':
      return `/${randomSegment()}/${randomSegment()}`;
    case 'bad-path':
      // An encoded slash is refused (400 ERR_REQUEST_BAD_PATH) before any routing.
      return `/open/${randomSegment()}%2F${randomSegment()}`;
  }
}

/** Every combination a connection of `mode` may carry. */
function specsFor(h2: boolean): Spec[] {
  const out: Spec[] = [];
  for (const path of PATH_KINDS)
    for (const host of HOST_KINDS)
      for (const method of h2 ? (['GET', 'random'] as const) : (['GET'] as const))
        out.push({ path, host, method });
  return out;
}
const H2_SPECS = specsFor(true);
const H1_SPECS = specsFor(false);

function pick<T>(items: readonly T[]): T {
  return items[Math.floor(Math.random() * items.length)] as T;
}

/** Tallies of what the requests got back. */
interface Tally {
  requests: number;
  mismatches: string[];
  errors: string[];
  byStatus: Record<string, number>;
}
function newTally(): Tally {
  return { requests: 0, mismatches: [], errors: [], byStatus: {} };
}
function record(t: Tally, label: string, want: number, got: number): void {
  t.requests += 1;
  t.byStatus[got] = (t.byStatus[got] ?? 0) + 1;
  if (got !== want && t.mismatches.length < 20) t.mismatches.push(`${label}: want ${want}, got ${got}`);
}

describe('metrics cardinality under a flood of random requests (threat model #106)', () => {
  let gw: TestGateway;
  let port: number;
  let adminPort: number;
  let ca: Buffer;
  const clients: ClientCert[] = [];
  let strangers: { cert: string; key: string }[] = [];

  beforeAll(async () => {
    const t0 = performance.now();
    const pki = mintTestPki();
    const subjects = Array.from({ length: CLIENT_CERTS }, (_, i): SubjectAttr[] => [
      { shortName: 'CN', value: note('subject', `cn-${rnd(12)}`) },
      { shortName: 'OU', value: note('subject', `ou-${rnd(12)}`) },
      ...(i % 2 === 0 ? [{ shortName: 'OU' as const, value: ALLOWED_OU }] : []),
    ]);
    mintWithSharedKey(pki.ca, subjects).forEach((c, i) => clients.push({ ...c, allowed: i % 2 === 0 }));
    // Random subjects from a CA the gateway does not trust: refused at the handshake.
    strangers = mintWithSharedKey(
      pki.otherCa,
      [0, 1].map(() => [{ shortName: 'CN', value: note('subject', `cn-${rnd(12)}`) }]),
    );
    gw = await startGateway((p) => ({
      admin: { enabled: true, listen: '127.0.0.1:0' },
      // A flood of access-log lines would only fill the helper's in-memory log capture.
      log: { level: 'info', access: false },
      listeners: [
        {
          name: 'web',
          listen: '127.0.0.1:0',
          tls: {
            cert: p.server.cert,
            key: p.server.key,
            clientCertificate: 'require',
            clientCa: p.ca,
            crl: p.crl,
          },
          routes: [
            { id: 'open', match: { pathPrefix: '/open' }, upstream: 'builtin:echo' },
            {
              id: 'acl',
              match: { pathPrefix: '/acl' },
              upstream: 'builtin:echo',
              allowClients: [`OU=${ALLOWED_OU}`],
            },
          ],
        },
      ],
    }));
    port = gw.port('web');
    adminPort = gw.app.adminPort() as number;
    ca = readFileSync(gw.pki.ca);
    console.log(
      `[metrics-cardinality] PKI, ${CLIENT_CERTS + 2} client certificates and the gateway in ${Math.round(performance.now() - t0)} ms`,
    );
  });

  afterAll(async () => {
    await gw?.close();
  });

  /** The server name a connection of `mode` sends ('' sends none). */
  const serverName = (mode: SniMode): string =>
    mode === 'sni' ? 'localhost' : mode === 'random-sni' ? randomSni() : '';
  /** The Host / :authority of `spec` on a connection that sent `sni`. */
  const authorityOf = (spec: Spec, sni: string): string =>
    spec.host === 'random' ? randomHost() : sni === '' ? 'localhost' : sni;

  /** Opens an HTTP/2 session; resolves once connected (rejects on an error first). */
  function openH2(sni: string, client: ClientCert): Promise<ClientHttp2Session> {
    return new Promise((resolve, reject) => {
      const session = h2connect(`https://127.0.0.1:${port}`, {
        ca,
        cert: client.cert,
        key: client.key,
        servername: sni,
        checkServerIdentity: () => undefined,
      });
      session.once('connect', () => resolve(session));
      session.once('error', reject);
      // After the connect, an error only fails the streams in flight (each records its status).
      session.on('error', () => undefined);
    });
  }

  /** One HTTP/2 request; resolves with its status (0 on a stream error). */
  function h2Request(session: ClientHttp2Session, spec: Spec, sni: string): Promise<number> {
    return new Promise((resolve) => {
      const stream = session.request({
        ':method': spec.method === 'GET' ? 'GET' : randomMethod(),
        ':path': pathOf(spec.path),
        ':authority': authorityOf(spec, sni),
      });
      let status = 0;
      stream.on('response', (h) => (status = Number(h[':status'])));
      stream.on('data', () => undefined);
      stream.on('close', () => resolve(status));
      stream.on('error', () => undefined);
      stream.end();
    });
  }

  /** A keep-alive HTTP/1.1 agent: one connection at a time, reopened after a refusal closes it. */
  function h1Agent(sni: string, client: ClientCert): HttpsAgent {
    return new HttpsAgent({
      keepAlive: true,
      maxSockets: 1,
      ca,
      cert: client.cert,
      key: client.key,
      servername: sni,
      checkServerIdentity: () => undefined,
    });
  }

  /** One HTTP/1.1 request on `agent`; resolves with its status (0 on an error). */
  function h1Request(agent: HttpsAgent, spec: Spec, sni: string): Promise<number> {
    return new Promise((resolve) => {
      const req = httpsRequest(
        {
          agent,
          host: '127.0.0.1',
          port,
          servername: sni,
          path: pathOf(spec.path),
          method: 'GET',
          headers: { host: authorityOf(spec, sni) },
        },
        (res) => {
          res.on('data', () => undefined);
          res.on('end', () => resolve(res.statusCode ?? 0));
          res.on('error', () => resolve(0));
        },
      );
      req.on('error', () => resolve(0));
      req.end();
    });
  }

  /**
   * One fresh TLS connection that writes `request` (when the handshake completes) and reads until the
   * close; resolves with the status of the answer, 0 when there is none (a refused handshake).
   */
  function oneShot(
    sni: string,
    client: { cert: string; key: string } | undefined,
    request: string,
  ): Promise<number> {
    return new Promise((resolve) => {
      const socket = tlsConnect({
        host: '127.0.0.1',
        port,
        ca,
        servername: sni,
        ALPNProtocols: ['http/1.1'],
        checkServerIdentity: () => undefined,
        ...(client ? { cert: client.cert, key: client.key } : {}),
      });
      let got = '';
      const timer = setTimeout(() => socket.destroy(), 5_000);
      socket.on('secureConnect', () => socket.write(request));
      socket.on('data', (c: Buffer) => (got += c.toString('latin1')));
      socket.on('error', () => undefined);
      socket.on('close', () => {
        clearTimeout(timer);
        const m = /^HTTP\/1\.1 (\d{3})/.exec(got);
        resolve(m ? Number(m[1]) : 0);
      });
    });
  }

  /** Requests on fresh connections, each refused before or at its first request. */
  type OneShotKind = 'h1-random-method' | 'stranger-cert' | 'no-cert' | 'plaintext';
  const ONE_SHOT_KINDS: readonly OneShotKind[] = [
    'h1-random-method',
    'stranger-cert',
    'no-cert',
    'plaintext',
  ];
  async function oneShotRequest(kind: OneShotKind, t: Tally): Promise<void> {
    const sni = serverName(pick(SNI_MODES));
    const line = (method: string): string =>
      `${method} /${randomSegment()} HTTP/1.1\r\nHost: ${randomHost()}\r\n\r\n`;
    switch (kind) {
      case 'h1-random-method':
        // llhttp refuses a method it does not know: 400 and close.
        record(t, kind, 400, await oneShot(sni, pick(clients), line(randomMethod())));
        return;
      case 'stranger-cert':
        record(t, kind, 0, await oneShot(sni, pick(strangers), line('GET')));
        return;
      case 'no-cert':
        record(t, kind, 0, await oneShot(sni, undefined, line('GET')));
        return;
      case 'plaintext': {
        // Answered with a plain 400 (policy/plaintext.ts) and closed, before any TLS.
        const r = await rawTcp(port, [line('GET')], { timeoutMs: 5_000 });
        record(t, kind, 400, Number(/^HTTP\/1\.1 (\d{3})/.exec(r.text)?.[1] ?? 0));
        return;
      }
    }
  }

  /** Every kind once: each SNI mode × certificate class × request spec, over HTTP/2 and HTTP/1.1, and each one-shot kind. */
  async function warmUp(): Promise<Tally> {
    const t = newTally();
    const allowed = clients.find((c) => c.allowed) as ClientCert;
    const denied = clients.find((c) => !c.allowed) as ClientCert;
    for (const mode of SNI_MODES) {
      for (const client of [allowed, denied]) {
        const sni = serverName(mode);
        const session = await openH2(sni, client);
        for (const spec of H2_SPECS) {
          const label = `h2 ${mode} ${spec.path} ${spec.host} ${spec.method}`;
          record(t, label, expectedStatus(spec, mode, client), await h2Request(session, spec, sni));
        }
        await new Promise<void>((resolve) => session.close(resolve));
        const agent = h1Agent(sni, client);
        for (const spec of H1_SPECS) {
          const label = `h1 ${mode} ${spec.path} ${spec.host}`;
          record(t, label, expectedStatus(spec, mode, client), await h1Request(agent, spec, sni));
        }
        agent.destroy();
      }
    }
    for (const kind of ONE_SHOT_KINDS) await oneShotRequest(kind, t);
    return t;
  }

  /** The flood: HTTP/2 and HTTP/1.1 workers plus one worker of one-shot connections, bounded by count and time. */
  async function flood(): Promise<{ tally: Tally; ms: number }> {
    const t = newTally();
    const started = performance.now();
    const deadline = started + FLOOD_MS;
    const more = (): boolean => t.requests < MAX_REQUESTS && performance.now() < deadline;
    const h2Worker = async (): Promise<void> => {
      while (more()) {
        const mode = pick(SNI_MODES);
        const client = pick(clients);
        const sni = serverName(mode);
        let session: ClientHttp2Session;
        try {
          session = await openH2(sni, client);
        } catch (err) {
          t.errors.push(`h2 connect: ${String(err)}`);
          continue;
        }
        let left = H2_PER_SESSION;
        const lane = async (): Promise<void> => {
          while (left > 0 && more()) {
            left -= 1;
            const spec = pick(H2_SPECS);
            const got = await h2Request(session, spec, sni);
            record(
              t,
              `h2 ${mode} ${spec.path} ${spec.host} ${spec.method}`,
              expectedStatus(spec, mode, client),
              got,
            );
          }
        };
        await Promise.all(Array.from({ length: H2_STREAMS }, lane));
        await new Promise<void>((resolve) => session.close(resolve));
      }
    };
    const h1Worker = async (): Promise<void> => {
      while (more()) {
        const mode = pick(SNI_MODES);
        const client = pick(clients);
        const sni = serverName(mode);
        const agent = h1Agent(sni, client);
        for (let i = 0; i < H1_PER_AGENT && more(); i++) {
          const spec = pick(H1_SPECS);
          const got = await h1Request(agent, spec, sni);
          record(t, `h1 ${mode} ${spec.path} ${spec.host}`, expectedStatus(spec, mode, client), got);
        }
        agent.destroy();
      }
    };
    const oneShotWorker = async (): Promise<void> => {
      while (more()) await oneShotRequest(pick(ONE_SHOT_KINDS), t);
    };
    await Promise.all([
      ...Array.from({ length: H2_WORKERS }, h2Worker),
      ...Array.from({ length: H1_WORKERS }, h1Worker),
      ...Array.from({ length: ONE_SHOT_WORKERS }, oneShotWorker),
    ]);
    return { tally: t, ms: performance.now() - started };
  }

  /** Scrapes three times; the last text and the median time. */
  async function scrape3(): Promise<{ text: string; medianMs: number }> {
    const times: number[] = [];
    let text = '';
    for (let i = 0; i < 3; i++) {
      const t0 = performance.now();
      text = await scrapeText(adminPort);
      times.push(performance.now() - t0);
    }
    times.sort((a, b) => a - b);
    return { text, medianMs: times[1] as number };
  }

  const seriesKey = (s: Sample): string =>
    `${s.name}{${Object.entries(s.labels)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([k, v]) => `${k}="${v}"`)
      .join(',')}}`;
  const ours = (samples: Sample[]): Sample[] => samples.filter((s) => s.name.startsWith('portcullis_'));
  /** Identities of every `portcullis_` series except the process-state families' (see isStateFamily). */
  const comparedSeries = (samples: Sample[]): Set<string> =>
    new Set(
      ours(samples)
        .filter((s) => !isStateFamily(s.name))
        .map(seriesKey),
    );
  /** The compared part of the exposition with every sample value cut off: what stays fixed when only counts change. */
  const comparedShape = (text: string): string[] =>
    text
      .split('\n')
      .filter((l) => !isStateFamily(lineName(l)))
      .map((l) => (l.startsWith('#') ? l : l.replace(/ \S+$/, '')));

  interface Snapshot {
    readonly text: string;
    readonly bytes: number;
    readonly samples: Sample[];
    readonly medianMs: number;
    readonly rss: number;
    readonly heapUsed: number;
  }
  async function snapshot(): Promise<Snapshot> {
    const { text, medianMs } = await scrape3();
    const mem = process.memoryUsage();
    return {
      text,
      bytes: Buffer.byteLength(text),
      samples: parseSamples(text),
      medianMs,
      rss: mem.rss,
      heapUsed: mem.heapUsed,
    };
  }

  let warm: Tally;
  let warmSnap: Snapshot;
  let floodTally: Tally;
  let floodMs: number;
  let floodSnap: Snapshot;
  let rssStart: number;

  beforeAll(async () => {
    rssStart = process.memoryUsage().rss;
    warm = await warmUp();
    warmSnap = await snapshot();
    ({ tally: floodTally, ms: floodMs } = await flood());
    floodSnap = await snapshot();
    const mb = (n: number): string => `${(n / 1048576).toFixed(1)} MiB`;
    console.log(
      `[metrics-cardinality] warm-up: ${warm.requests} requests; flood: ${floodTally.requests} requests in ` +
        `${(floodMs / 1000).toFixed(1)} s (${Math.round((floodTally.requests * 1000) / floodMs)} req/s), ` +
        `statuses ${JSON.stringify(floodTally.byStatus)}; random strings sent: ${Object.entries(sent)
          .map(([k, v]) => `${k} ${v.size}`)
          .join(', ')}`,
    );
    console.log(
      `[metrics-cardinality] portcullis_ series: ${ours(warmSnap.samples).length} after the warm-up, ` +
        `${ours(floodSnap.samples).length} after the flood (compared, process-state families apart: ` +
        `${comparedSeries(warmSnap.samples).size} / ${comparedSeries(floodSnap.samples).size}); ` +
        `exposition ${warmSnap.bytes} B / ${floodSnap.bytes} B; scrape median ${warmSnap.medianMs.toFixed(1)} ms / ` +
        `${floodSnap.medianMs.toFixed(1)} ms; RSS ${mb(rssStart)} at start, ${mb(warmSnap.rss)} after the warm-up, ` +
        `${mb(floodSnap.rss)} after the flood (heap used ${mb(warmSnap.heapUsed)} / ${mb(floodSnap.heapUsed)}; ` +
        `the test's clients and its record of every random string share the process)`,
    );
  }, 90_000);

  it('the warm-up and the flood got exactly the answers they were built for', () => {
    expect(warm.mismatches).toEqual([]);
    expect(warm.requests).toBe(
      SNI_MODES.length * 2 * (H2_SPECS.length + H1_SPECS.length) + ONE_SHOT_KINDS.length,
    );
    expect(floodTally.errors).toEqual([]);
    expect(floodTally.mismatches).toEqual([]);
    expect(floodTally.requests).toBeGreaterThanOrEqual(MIN_REQUESTS);
    expect(floodTally.requests).toBeLessThanOrEqual(MAX_REQUESTS);
    // Every answer the warm-up met, the flood met many times (and no other).
    expect(Object.keys(floodTally.byStatus).sort()).toEqual(Object.keys(warm.byStatus).sort());
    for (const n of Object.values(floodTally.byStatus)) expect(n).toBeGreaterThanOrEqual(20);
  }, 10_000);

  it('every portcullis_ series after the flood existed after the warm-up, and none went away', () => {
    const before = comparedSeries(warmSnap.samples);
    const after = comparedSeries(floodSnap.samples);
    // A new series here names the family and the label value that grew with the requests.
    expect([...after].filter((k) => !before.has(k))).toEqual([]);
    expect([...before].filter((k) => !after.has(k))).toEqual([]);
    expect(after.size).toBe(before.size);
    // The same families, HELP and TYPE lines and series, in the same order: only the numbers moved.
    expect(comparedShape(floodSnap.text)).toEqual(comparedShape(warmSnap.text));
    // The requests were counted (so the comparison is between a warm registry and a flooded one).
    const requests = (xs: Sample[]): number =>
      xs.filter((s) => s.name === 'portcullis_http_requests_total').reduce((n, s) => n + s.value, 0);
    expect(requests(floodSnap.samples) - requests(warmSnap.samples)).toBeGreaterThanOrEqual(
      floodTally.requests - (floodTally.byStatus[0] ?? 0) - (floodTally.byStatus[400] ?? 0),
    );
  }, 10_000);

  it('the process-state families hold only V8 GC kinds and Node class names: bounded whatever the requests', () => {
    const state = ours(floodSnap.samples).filter((s) => isStateFamily(s.name));
    const gc = state.filter((s) => GC_FAMILY.test(s.name));
    const kinds = [...new Set(gc.map((s) => s.labels['kind'] ?? ''))];
    expect(kinds.filter((k) => !GC_KINDS.includes(k))).toEqual([]);
    expect(gc.length).toBe(kinds.length * GC_SERIES_PER_KIND);
    const active = state.filter((s) => ACTIVE_FAMILY.test(s.name));
    expect(active.map((s) => Object.keys(s.labels).join()).filter((k) => k !== 'type')).toEqual([]);
    expect(
      active.map((s) => s.labels['type'] ?? '').filter((v) => !/^[A-Z][A-Za-z0-9]{1,40}$/.test(v)),
    ).toEqual([]);
    expect(active.length).toBeLessThanOrEqual(MAX_ACTIVE_TYPE_SERIES);
    // So the whole exposition is bounded by a constant, however many requests came.
    expect(ours(floodSnap.samples).length).toBeLessThanOrEqual(
      comparedSeries(warmSnap.samples).size + GC_KINDS.length * GC_SERIES_PER_KIND + MAX_ACTIVE_TYPE_SERIES,
    );
  }, 10_000);

  it('no random path, host, method, SNI or certificate subject appears in /metrics', () => {
    const everything = new Set(Object.values(sent).flatMap((set) => [...set]));
    // Every label value of every series against every random string sent.
    const labelHits = floodSnap.samples.flatMap((s) =>
      Object.values(s.labels).filter((v) => everything.has(v) || everything.has(v.toLowerCase())),
    );
    expect(labelHits).toEqual([]);
    // A spread sample of each kind (all SNIs and subjects) as a substring of the whole text, any case.
    const lower = floodSnap.text.toLowerCase();
    const spread = (values: string[], n: number): string[] =>
      values.length <= n
        ? values
        : Array.from({ length: n }, (_, i) => values[Math.floor((i * values.length) / n)] as string);
    const checked: string[] = [
      ...spread([...sent.path], TEXT_SAMPLE),
      ...spread([...sent.host], TEXT_SAMPLE),
      ...spread([...sent.method], TEXT_SAMPLE),
      ...sent.sni,
      ...sent.subject,
    ];
    expect(checked.length).toBeGreaterThan((4 * TEXT_SAMPLE) / 2);
    expect(checked.filter((v) => lower.includes(v.toLowerCase()))).toEqual([]);
    // Nor any fragment of them: the random strings share their prefixes' shapes, so look for those too.
    expect(floodSnap.text).not.toMatch(/\b(cn|ou)-[0-9a-z]{12}\b|\.example\b|\.test\b/);
  }, 10_000);

  it('the exposition grows only by the width of its numbers, and a scrape stays fast', () => {
    const comparedBytes = (text: string): number => Buffer.byteLength(comparedShape(text).join('\n'));
    // Without the numbers, the compared part is byte for byte what it was (see the series test); with
    // them, each sample line may grow by at most the width of a printed double.
    const samplesCompared = comparedSeries(floodSnap.samples).size;
    expect(comparedBytes(floodSnap.text)).toBe(comparedBytes(warmSnap.text));
    const stateBytes = (text: string): number =>
      Buffer.byteLength(
        text
          .split('\n')
          .filter((l) => isStateFamily(lineName(l)))
          .join('\n'),
      );
    expect(floodSnap.bytes - stateBytes(floodSnap.text)).toBeLessThanOrEqual(
      warmSnap.bytes - stateBytes(warmSnap.text) + samplesCompared * 24,
    );
    // The process-state families, whole: at most 4 × 9 GC lines and 40 type lines of under 120 bytes each.
    expect(stateBytes(floodSnap.text)).toBeLessThan(
      (GC_KINDS.length * GC_SERIES_PER_KIND + MAX_ACTIVE_TYPE_SERIES) * 120 + 1_000,
    );
    expect(floodSnap.bytes).toBeLessThan(64 * 1024);
    // Threat model #106: under 1 s (median of 3); the scrape does no work per request seen.
    expect(floodSnap.medianMs).toBeLessThan(1_000);
  }, 10_000);
});
