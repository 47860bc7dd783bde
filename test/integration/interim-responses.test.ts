/**
 * Interim responses do not stop the clock (threat model #134). An upstream that answers with `102 Processing`
 * or `103 Early Hints` again and again, and never with a final response, must not hold the request past
 * `timeouts.upstreamResponseMs`: undici restarts its own headers timer on every 1xx, the gateway's deadline
 * does not move. The client gets its 504 on time and sees none of the interim responses; the upstream
 * connection is destroyed, never handed to the next request. A `100 Continue` nobody asked for is a bad
 * response (502) at once.
 *
 * The upstream is a raw TCP server: no HTTP library would send a 1xx loop.
 */
import { request as httpsRequest } from 'node:https';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { h2session, tlsOptions } from '../helpers/clients.js';
import { startGateway, tlsListener, type TestGateway } from '../helpers/gateway.js';

/** `timeouts.upstreamResponseMs` of the gateway under test. */
const RESPONSE_MS = 1_000;
/** Slack for a loaded machine: the 504 must come before RESPONSE_MS + SLACK_MS. Without the fix it comes
 * only when the upstream's loop ends, LOOP_MS later. */
const SLACK_MS = 1_200;
/** How long the upstream keeps sending interim responses (bounded), and how often. */
const LOOP_MS = 6_000;
const EVERY_MS = 100;

interface UpstreamConn {
  readonly id: number;
  readonly paths: string[];
  closedAt?: number;
  interimSent: number;
}

/**
 * Reads request heads off each connection and answers by path:
 *   /interim/102, /interim/103  that interim response every EVERY_MS for LOOP_MS, then silence
 *   /continue                   `100 Continue` every EVERY_MS for LOOP_MS
 *   anything else               200 "ok", keep-alive
 */
function startInterimUpstream(): Promise<{
  server: Server;
  port: number;
  conns: UpstreamConn[];
  requests: { path: string; conn: UpstreamConn }[];
}> {
  const conns: UpstreamConn[] = [];
  /** Every request, in arrival order, with the connection that carried it. */
  const requests: { path: string; conn: UpstreamConn }[] = [];
  const server = createServer((socket: Socket) => {
    const conn: UpstreamConn = { id: conns.length, paths: [], interimSent: 0 };
    conns.push(conn);
    let buf = '';
    let loop: NodeJS.Timeout | undefined;
    socket.on('error', () => undefined);
    socket.on('close', () => {
      conn.closedAt = Date.now();
      clearInterval(loop);
    });
    socket.on('data', (chunk: Buffer) => {
      buf += chunk.toString('latin1');
      let end: number;
      while ((end = buf.indexOf('\r\n\r\n')) !== -1) {
        const head = buf.slice(0, end);
        buf = buf.slice(end + 4);
        const path = head.split(' ')[1] ?? '/';
        conn.paths.push(path);
        requests.push({ path, conn });
        const interim =
          path === '/interim/102'
            ? 'HTTP/1.1 102 Processing\r\n\r\n'
            : path === '/interim/103'
              ? 'HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n'
              : path === '/continue'
                ? 'HTTP/1.1 100 Continue\r\n\r\n'
                : undefined;
        if (interim === undefined) {
          socket.write('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok');
          continue;
        }
        const started = Date.now();
        const send = (): void => {
          if (socket.destroyed || Date.now() - started > LOOP_MS) {
            clearInterval(loop);
            return;
          }
          socket.write(interim);
          conn.interimSent += 1;
        };
        send();
        loop = setInterval(send, EVERY_MS);
      }
    });
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve({ server, port: (server.address() as AddressInfo).port, conns, requests })),
  );
}

let up: Awaited<ReturnType<typeof startInterimUpstream>>;
let gw: TestGateway;

beforeAll(async () => {
  up = await startInterimUpstream();
  gw = await startGateway((pki) => ({
    timeouts: { upstreamResponseMs: RESPONSE_MS },
    listeners: [
      tlsListener(pki, {
        routes: [{ id: 'up', match: { pathPrefix: '/' }, upstream: `http://127.0.0.1:${up.port}` }],
      }),
    ],
  }));
});

afterAll(async () => {
  await gw?.close();
  await new Promise<void>((resolve) => (up ? up.server.close(() => resolve()) : resolve()));
});

interface Answer {
  status: number;
  /** Interim responses the client received. */
  informational: number;
  ms: number;
}

/** One HTTP/1.1 GET through the gateway, counting the 1xx the client sees (node:http's 'information'). */
function getH1(path: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    let informational = 0;
    const req = httpsRequest(
      {
        ...tlsOptions(gw.pki, 'alice'),
        host: '127.0.0.1',
        port: gw.port(),
        path,
        headers: { host: `localhost:${gw.port()}` },
        agent: false,
      },
      (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode ?? 0, informational, ms: Date.now() - t0 }));
      },
    );
    req.on('information', () => (informational += 1));
    req.on('error', reject);
    req.setTimeout(LOOP_MS + 5_000, () => req.destroy(new Error('client timeout')));
    req.end();
  });
}

/** One HTTP/2 GET, counting the 1xx header blocks (node:http2's 'headers' event). */
async function getH2(path: string): Promise<Answer> {
  const session = h2session(gw.port(), gw.pki);
  try {
    return await new Promise<Answer>((resolve, reject) => {
      const t0 = Date.now();
      let informational = 0;
      let status = 0;
      const st = session.request({ ':path': path });
      st.on('headers', () => (informational += 1));
      st.on('response', (h) => (status = Number(h[':status'])));
      st.resume();
      st.on('end', () => resolve({ status, informational, ms: Date.now() - t0 }));
      st.on('error', reject);
      st.setTimeout(LOOP_MS + 5_000, () => st.close());
      st.end();
    });
  } finally {
    session.close();
  }
}

/** The upstream connection that carried the latest request for `path`. */
function connOf(path: string): UpstreamConn {
  const c = up.requests.filter((x) => x.path === path).at(-1)?.conn;
  if (c === undefined) throw new Error(`no upstream connection carried ${path}`);
  return c;
}

async function waitFor(cond: () => boolean, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return cond();
}

describe('an upstream that sends interim responses and never a final one', () => {
  it.each<[string, string, (p: string) => Promise<Answer>]>([
    ['HTTP/1.1', '/interim/103', getH1],
    ['HTTP/1.1', '/interim/102', getH1],
    ['HTTP/2', '/interim/103', getH2],
  ])('%s %s: 504 within upstreamResponseMs, no 1xx relayed, the connection discarded', async (_proto, path, get) => {
    const errorsBefore = await gw.metric('portcullis_upstream_errors_total', { route: 'up', reason: 'ERR_UPSTREAM_TIMEOUT' });
    const logsBefore = gw.logs().length;
    const r = await get(path);
    expect(r.status).toBe(504);
    expect(r.ms).toBeLessThan(RESPONSE_MS + SLACK_MS);
    expect(r.ms).toBeGreaterThanOrEqual(RESPONSE_MS - 50);
    expect(r.informational).toBe(0);
    const conn = connOf(path);
    // The upstream did send several (the loop was still going when the 504 came).
    expect(conn.interimSent).toBeGreaterThan(3);
    // The connection is destroyed, not returned to the pool: the upstream sees it close now, long before
    // its own loop would have ended.
    expect(await waitFor(() => conn.closedAt !== undefined, 1_000)).toBe(true);
    // The next request goes out on another connection (a new one, or an idle one of an earlier 200), and
    // works; nothing followed the interim loop on its connection.
    const ok = await get('/ok');
    expect(ok.status).toBe(200);
    expect(connOf('/ok').id).not.toBe(conn.id);
    expect(conn.paths.at(-1)).toBe(path);
    expect(
      (await gw.metric('portcullis_upstream_errors_total', { route: 'up', reason: 'ERR_UPSTREAM_TIMEOUT' })) - errorsBefore,
    ).toBe(1);
    const lines = gw.logs().slice(logsBefore).filter((l) => l.msg === 'request' && l.path === path);
    expect(lines.map((l) => [l.status, l.reason])).toEqual([[504, 'ERR_UPSTREAM_TIMEOUT']]);
  }, 20_000);

  it('an unasked-for 100 Continue: 502 ERR_UPSTREAM_BAD_RESPONSE at once, the connection discarded', async () => {
    const logsBefore = gw.logs().length;
    const r = await getH1('/continue');
    expect(r.status).toBe(502);
    expect(r.ms).toBeLessThan(RESPONSE_MS);
    expect(r.informational).toBe(0);
    const conn = connOf('/continue');
    expect(await waitFor(() => conn.closedAt !== undefined, 1_000)).toBe(true);
    const lines = gw.logs().slice(logsBefore).filter((l) => l.msg === 'request' && l.path === '/continue');
    expect(lines.map((l) => [l.status, l.reason])).toEqual([[502, 'ERR_UPSTREAM_BAD_RESPONSE']]);
  }, 20_000);
});
