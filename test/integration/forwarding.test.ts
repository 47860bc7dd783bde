import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, tlsListener, type TestGateway } from '../helpers/gateway.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';
import { h1, h2, h2session } from '../helpers/clients.js';

describe('forwarding to a real upstream over HTTP/1.1 and HTTP/2', () => {
  let up: TestUpstream;
  let gw: TestGateway;
  beforeAll(async () => {
    up = await startUpstream();
    gw = await startGateway((pki) => ({
      listeners: [tlsListener(pki, { routes: [{ id: 'up', match: { pathPrefix: '/' }, upstream: up.url }] })],
    }));
  });
  afterAll(async () => {
    await gw.close();
    await up.close();
  });

  it('forwards an HTTP/1.1 request with the gateway identity headers', async () => {
    const r = await h1(gw.port(), gw.pki, { path: '/api/x?q=1' });
    expect(r.status).toBe(200);
    const seen = up.seen.at(-1)!;
    expect(seen.url).toBe('/api/x?q=1');
    expect(seen.headers['x-forwarded-client-cert']).toMatch(/^Hash=[0-9a-f]{64};Subject="OU=data-science,CN=alice";URI=spiffe:\/\/portcullis\.test\/client\/alice$/);
    expect(seen.headers['x-forwarded-proto']).toBe('https');
    expect(seen.headers.host).toBe(`localhost:${gw.port()}`);
    // The upstream latency histogram observed this exchange (time to the upstream's response headers).
    const hist = await gw.app.registry.getSingleMetric('portcullis_upstream_response_duration_seconds')!.get();
    const count = (hist.values as { metricName?: string; labels: Record<string, unknown>; value: number }[]).find(
      (v) => v.metricName === 'portcullis_upstream_response_duration_seconds_count' && v.labels.route === 'up',
    );
    expect(count?.value).toBeGreaterThanOrEqual(1);
  });

  it('forwards HTTP/2: no pseudo-header upstream, :authority becomes Host', async () => {
    const s = h2session(gw.port(), gw.pki);
    try {
      const r = await h2(s, { ':path': '/h2/path', 'x-custom': 'v' });
      expect(r.status).toBe(200);
      const seen = up.seen.at(-1)!;
      expect(seen.url).toBe('/h2/path');
      expect(seen.rawHeaders.filter((_, i) => i % 2 === 0).some((n) => n.startsWith(':'))).toBe(false);
      expect(seen.headers.host).toBe(`localhost:${gw.port()}`);
      expect(seen.headers['x-custom']).toBe('v');
    } finally {
      s.close();
    }
  });

  it('survives a chunked keep-alive upstream answer on HTTP/2 (threat model #83)', async () => {
    const s = h2session(gw.port(), gw.pki);
    try {
      const r = await h2(s, { ':path': '/chunked' });
      expect(r.status).toBe(200);
      expect(r.body).toBe('part1\npart2\n');
      expect(r.headers['x-secret-hop']).toBeUndefined();
      expect(r.headers['keep-alive']).toBeUndefined();
      const again = await h2(s, { ':path': '/ok' });
      expect(again.status).toBe(200);
    } finally {
      s.close();
    }
  });
});
