/**
 * deploy/ingress-nginx/portcullis.yaml read as a cluster would read it (the nginx and caddy examples run for
 * real in test/interop/nginx-decisions.test.ts and caddy-decisions.test.ts): every manifest parses, the
 * embedded portcullis.yaml passes the real loader, and the Ingress asks that config's decision listener
 * on loopback for headers the decision answers.
 */
import { readFileSync } from 'node:fs';
import { parseAllDocuments } from 'yaml';
import { describe, expect, it } from 'vitest';
import { loadConfigText } from '../../../src/load-config.js';
import type { DecisionRuntimeListener } from '../../../src/config/runtime.js';
import { ANSWERED_HEADERS } from '../../../src/listener/decision-handler.js';

interface Manifest {
  kind: string;
  metadata: { name: string; annotations?: Record<string, string> };
  data?: Record<string, string>;
  spec?: { template?: { spec?: { containers?: { name: string; args?: string[] }[] } } };
}

const docs = parseAllDocuments(readFileSync('deploy/ingress-nginx/portcullis.yaml', 'utf8')).map((d) => {
  expect(d.errors).toEqual([]);
  return d.toJS() as Manifest;
});
const byKind = (kind: string): Manifest => {
  const m = docs.find((d) => d.kind === kind);
  if (m === undefined) throw new Error(`no ${kind}`);
  return m;
};

describe('deploy/ingress-nginx', () => {
  it('holds a ConfigMap, the controller patch and an Ingress', () => {
    expect(docs.map((d) => d.kind)).toEqual(['ConfigMap', 'Deployment', 'Ingress']);
    const sidecar = byKind('Deployment').spec?.template?.spec?.containers?.find((c) => c.name === 'portcullis');
    expect(sidecar?.args).toEqual(['start', '--config', '/etc/portcullis/config/portcullis.yaml']);
  });

  it('its portcullis.yaml passes the real loader: a loopback decision listener from ingress-nginx', () => {
    const config = loadConfigText(byKind('ConfigMap').data?.['portcullis.yaml'] ?? '', '/etc/portcullis/config/portcullis.yaml');
    const l = config.listeners[0] as DecisionRuntimeListener;
    expect([l.protocol, l.from, l.address]).toEqual(['decision', 'ingress-nginx', { host: '127.0.0.1', port: 4180 }]);
  });

  it('the Ingress asks that listener, copies only headers the decision answers, and names the cache bound', () => {
    const a = byKind('Ingress').metadata.annotations ?? {};
    expect(a['nginx.ingress.kubernetes.io/auth-url']).toBe('http://127.0.0.1:4180/decide');
    const copied = (a['nginx.ingress.kubernetes.io/auth-response-headers'] ?? '').split(',');
    expect(copied.length).toBeGreaterThan(0);
    for (const h of copied) expect(ANSWERED_HEADERS.has(h.toLowerCase()), h).toBe(true);
    expect(a['nginx.ingress.kubernetes.io/auth-signin']).toMatch(/^https:\/\/\$host\/_portcullis\/login\?rd=\$escaped_request_uri$/);
    expect(a['nginx.ingress.kubernetes.io/auth-cache-duration']).toBe('200 401 403 10s');
    expect(a['nginx.ingress.kubernetes.io/auth-cache-key']).toContain('$http_authorization');
  });
});
