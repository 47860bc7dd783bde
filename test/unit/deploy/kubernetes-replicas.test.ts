/**
 * deploy/kubernetes/replicas/, the multi-replica overlay (issue 17 point 6), read as kustomize and a cluster
 * would: every manifest parses, the kustomization names files that exist, the HorizontalPodAutoscaler scales
 * the base's Deployment from at least 2 replicas, the gateway's config (the patched ConfigMap) passes the real
 * loader with a TLS Redis store whose files are all mounted by the Deployment patch, and Redis itself speaks
 * TLS only, requires client certificates and the password from a Secret, and evicts only keys with a lifetime.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfigText } from '../../../src/load-config.js';
import { writePki, type TestPkiPaths } from '../../helpers/pki.js';

const DIR = 'deploy/kubernetes/replicas';

type Obj = Record<string, unknown>;
interface Doc {
  kind: string;
  metadata?: { name: string };
  [key: string]: unknown;
}

const files = readdirSync(DIR).filter((f) => /\.ya?ml$/.test(f));
const docs: (Doc & { file: string })[] = files.flatMap((file) =>
  parseAllDocuments(readFileSync(join(DIR, file), 'utf8')).map((d) => {
    if (d.errors.length > 0) throw new Error(`${file}: ${d.errors.map((e) => e.message).join('; ')}`);
    return { ...(d.toJS() as Doc), file };
  }),
);
const one = (kind: string, name: string): Doc => {
  const found = docs.filter((d) => d.kind === kind && d.metadata?.name === name);
  if (found.length !== 1) throw new Error(`expected one ${kind} ${name}, found ${found.length}`);
  return found[0]!;
};

const kustomization = docs.find((d) => d.kind === 'Kustomization') as unknown as {
  resources: string[];
  patches: { path: string }[];
};
const config = (one('ConfigMap', 'portcullis-config') as Doc & { data: Record<string, string> }).data['portcullis.yaml'] ?? '';
const patch = one('Deployment', 'sample-app') as Doc & {
  spec: {
    template: {
      spec: {
        containers: { name: string; volumeMounts: { name: string; mountPath: string }[] }[];
        volumes: { name: string; secret?: { secretName: string } }[];
      };
    };
  };
};

let dir: string;
let pki: TestPkiPaths;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'portcullis-k8s-replicas-'));
  pki = await writePki(join(dir, 'pki'));
  await writeFile(join(dir, 'password'), 'from-the-secret\n', { mode: 0o600 });
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('deploy/kubernetes/replicas', () => {
  it('the kustomization builds on the sidecar example and names files that exist', () => {
    expect(kustomization.resources).toContain('../');
    for (const f of [...kustomization.resources.filter((r) => r !== '../'), ...kustomization.patches.map((p) => p.path)])
      expect(existsSync(join(DIR, f)), f).toBe(true);
    const named = new Set([...kustomization.resources, ...kustomization.patches.map((p) => p.path)]);
    for (const f of files.filter((x) => x !== 'kustomization.yaml')) expect(named.has(f), f).toBe(true);
  });

  it('a HorizontalPodAutoscaler scales the Deployment from 2 replicas, and a PodDisruptionBudget keeps one up', () => {
    const hpa = one('HorizontalPodAutoscaler', 'sample-app') as Doc & {
      spec: { scaleTargetRef: { kind: string; name: string }; minReplicas: number; maxReplicas: number };
    };
    expect(hpa.spec.scaleTargetRef).toMatchObject({ kind: 'Deployment', name: 'sample-app' });
    expect(hpa.spec.minReplicas).toBeGreaterThanOrEqual(2);
    expect(hpa.spec.maxReplicas).toBeGreaterThan(hpa.spec.minReplicas);
    const pdb = one('PodDisruptionBudget', 'sample-app') as Doc & { spec: { minAvailable: number } };
    expect(pdb.spec.minAvailable).toBeGreaterThanOrEqual(1);
  });

  it('the gateway config passes the real loader: a TLS Redis store, every file it names mounted by the patch', () => {
    const mounts = patch.spec.template.spec.containers.find((c) => c.name === 'portcullis')?.volumeMounts ?? [];
    const base = readFileSync('deploy/kubernetes/deployment.yaml', 'utf8');
    const paths: Record<string, string> = {
      '/etc/portcullis/tls/tls.crt': pki.server.cert,
      '/etc/portcullis/tls/tls.key': pki.server.key,
      '/etc/portcullis/tls/ca.crt': pki.ca,
      '/etc/portcullis/redis-tls/ca.crt': pki.ca,
      '/etc/portcullis/redis-tls/tls.crt': pki.clients.alice.cert,
      '/etc/portcullis/redis-tls/tls.key': pki.clients.alice.key,
      '/etc/portcullis/redis-password/password': join(dir, 'password'),
    };
    let text = config;
    for (const [from, to] of Object.entries(paths)) {
      expect(config).toContain(from);
      const folder = from.slice(0, from.lastIndexOf('/'));
      // Mounted by this overlay's patch, or by the base Deployment (the listener's certificates).
      expect(mounts.some((m) => m.mountPath === folder) || base.includes(`mountPath: ${folder}`), folder).toBe(true);
      text = text.replaceAll(from, to);
    }
    const loaded = loadConfigText(text, join(dir, 'portcullis.yaml'));
    expect(loaded.store).toMatchObject({ type: 'redis', host: 'redis', port: 6380, keyPrefix: 'sample-app:', password: 'from-the-secret' });
    if (loaded.store.type === 'redis') expect(loaded.store.tls?.cert).toBeDefined();
    const secrets = patch.spec.template.spec.volumes.map((v) => v.secret?.secretName);
    expect(secrets).toEqual(expect.arrayContaining(['portcullis-redis-client', 'redis-password']));
  });

  it('Redis speaks TLS only with client certificates, AUTH from the Secret, no persistence, evicts only keys with a lifetime', () => {
    const redis = one('Deployment', 'redis') as Doc & {
      spec: { template: { spec: { containers: { args: string[]; env: Obj[] }[] } } };
    };
    const c = redis.spec.template.spec.containers[0]!;
    const arg = (name: string): string | undefined => c.args[c.args.indexOf(name) + 1];
    expect(arg('--port')).toBe('0');
    expect(arg('--tls-port')).toBe('6380');
    expect(arg('--tls-auth-clients')).toBe('yes');
    expect(arg('--requirepass')).toBe('$(REDIS_PASSWORD)');
    expect(JSON.stringify(c.env)).toContain('redis-password');
    expect(arg('--save')).toBe('');
    expect(arg('--maxmemory-policy')).toMatch(/^volatile-/);
    // No secret in the repository: the password Secret is made by the operator (kustomization comment).
    expect(docs.some((d) => d.kind === 'Secret')).toBe(false);
  });
});
