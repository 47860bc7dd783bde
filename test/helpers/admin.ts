/** Plain-HTTP clients for the admin listener and a reader for its Prometheus text exposition. */
import { request as httpRequest } from 'node:http';

/** One `name{labels} value` line of a Prometheus text exposition. */
export interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

/** GETs `/metrics` from the admin port; rejects unless the answer is 200. */
export function scrapeText(adminPort: number): Promise<string> {
  return new Promise((resolve, reject) => {
    httpRequest({ host: '127.0.0.1', port: adminPort, path: '/metrics', agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () =>
        res.statusCode === 200 ? resolve(text) : reject(new Error(`/metrics ${res.statusCode}`)),
      );
    })
      .on('error', reject)
      .end();
  });
}

/** Every sample of an exposition (comments skipped); throws on a line that is not a sample, so bad output fails. */
export function parseSamples(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`unreadable exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g))
      labels[l[1] as string] = l[2] as string;
    out.push({ name: m[1] as string, labels, value: Number(m[3]) });
  }
  return out;
}

/** The value of the sample line `series ...` (`name{labels}` written exactly as exposed), or undefined. */
export function sampleValue(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

/** GETs `path` from the admin port over plain HTTP (fresh connection); resolves with any status and the body. */
export function adminGet(port: number, path: string): Promise<{ status: number; body: string }> {
  return adminRequest(port, path, 'GET');
}

/** POSTs (no body) to `path` on the admin port over plain HTTP, e.g. `/cache/purge`. */
export function adminPost(port: number, path: string): Promise<{ status: number; body: string }> {
  return adminRequest(port, path, 'POST');
}

function adminRequest(port: number, path: string, method: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    httpRequest({ host: '127.0.0.1', port, path, method, agent: false }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    })
      .on('error', reject)
      .end();
  });
}
