/**
 * deploy/kubernetes/, read as a cluster would read it: every manifest parses (the `yaml` package), the
 * kustomization names every file, and the Deployment runs Portcullis as the sidecar of a sample service
 * the way the README says:
 * - config from the ConfigMap, certificates from the Secret the cert-manager Certificate fills, each
 *   mounted read-only where the embedded config looks for them;
 * - kubelet's startup, readiness and liveness probes exec `portcullis probe` with the same config (the
 *   admin listener stays on loopback), on /readyz and /healthz;
 * - preStop drain: the gateway's preStop is shorter than the app's by at least the drain, and
 *   terminationGracePeriodSeconds covers preStop + timeouts.shutdownGraceMs + the exit's log flush;
 * - non-root, read-only root filesystem, no privilege escalation, no capabilities, resource requests;
 * - the Service sends its one port to the gateway's listener (never to the app);
 * - the ConfigMap's portcullis.yaml passes the real loader (src/config/load.ts) with certificates minted
 *   here by openssl as cert-manager issues them (ECDSA P-256, PKCS#8) at the Secret's file names.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join, posix } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfigText } from '../../../src/load-config.js';
import type { RuntimeConfig } from '../../../src/config/runtime.js';
import { DEFAULTS } from '../../../src/config/defaults.js';

const DIR = 'deploy/kubernetes';
const SHUTDOWN_FLUSH_S = 2; // main.ts: after the drain, up to 2 s for the last log lines before exit

interface Manifest {
  apiVersion: string;
  kind: string;
  /** Absent only on kustomization.yaml. */
  metadata: { name: string; labels?: Record<string, string> };
  [key: string]: unknown;
}
interface Probe {
  exec?: { command: string[] };
  periodSeconds?: number;
  timeoutSeconds?: number;
  failureThreshold?: number;
}
interface Container {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  ports?: { name?: string; containerPort: number }[];
  startupProbe?: Probe;
  readinessProbe?: Probe;
  livenessProbe?: Probe;
  lifecycle?: { preStop?: { exec?: { command: string[] } } };
  resources?: { requests?: { cpu?: string; memory?: string }; limits?: { memory?: string } };
  securityContext?: {
    allowPrivilegeEscalation?: boolean;
    readOnlyRootFilesystem?: boolean;
    runAsNonRoot?: boolean;
    capabilities?: { drop?: string[]; add?: string[] };
  };
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
}
interface Volume {
  name: string;
  configMap?: { name: string };
  secret?: { secretName: string; defaultMode?: number };
}
interface PodSpec {
  terminationGracePeriodSeconds?: number;
  automountServiceAccountToken?: boolean;
  securityContext?: {
    runAsNonRoot?: boolean;
    runAsUser?: number;
    runAsGroup?: number;
    fsGroup?: number;
  };
  containers: Container[];
  volumes: Volume[];
}

const files = readdirSync(DIR).filter((f) => /\.ya?ml$/.test(f));
const manifests: (Manifest & { file: string })[] = files.flatMap((file) => {
  const docs = parseAllDocuments(readFileSync(join(DIR, file), 'utf8'));
  return (Array.isArray(docs) ? docs : [docs]).map((d) => {
    if (d.errors.length > 0) throw new Error(`${file}: ${d.errors.map((e) => e.message).join('; ')}`);
    return { ...(d.toJS() as Manifest), file };
  });
});
const one = (kind: string, name?: string): Manifest => {
  const found = manifests.filter(
    (m) =>
      m.kind === kind &&
      (name === undefined || (m.metadata as Manifest['metadata'] | undefined)?.name === name),
  );
  if (found.length !== 1) throw new Error(`expected one ${kind} ${name ?? ''}, found ${found.length}`);
  return found[0]!;
};

const deployment = one('Deployment') as Manifest & {
  spec: {
    selector: { matchLabels: Record<string, string> };
    template: { metadata: { labels: Record<string, string> }; spec: PodSpec };
  };
};
const pod = deployment.spec.template.spec;
const gateway = pod.containers.find((c) => c.name === 'portcullis')!;
const app = pod.containers.find((c) => c.name === 'app')!;
const configPath = gateway.args?.[gateway.args.indexOf('--config') + 1] ?? '';

/** The volume mounted at the folder holding `path` (longest mountPath prefix) in `c`, and the rest. */
function volumeOf(c: Container, path: string): { volume: Volume; mountPath: string; rest: string } {
  const m = (c.volumeMounts ?? [])
    .filter((v) => path.startsWith(`${v.mountPath}/`))
    .sort((a, b) => b.mountPath.length - a.mountPath.length)[0];
  if (m === undefined) throw new Error(`${path}: not under any volumeMount of ${c.name}`);
  const volume = pod.volumes.find((v) => v.name === m.name);
  if (volume === undefined) throw new Error(`volumeMount ${m.name}: no such volume`);
  return { volume, mountPath: m.mountPath, rest: posix.relative(m.mountPath, path) };
}

/** The portcullis.yaml the ConfigMap holds at the key the gateway's --config names. */
function embeddedConfig(): string {
  const { volume, rest } = volumeOf(gateway, configPath);
  const cm = one('ConfigMap', volume.configMap?.name) as Manifest & { data: Record<string, string> };
  const text = cm.data[rest];
  if (text === undefined) throw new Error(`ConfigMap ${cm.metadata.name} has no key ${rest}`);
  return text;
}

/** The seconds of a `sleep N` preStop hook (0 when there is none). */
function preStopSleep(c: Container): number {
  const cmd = c.lifecycle?.preStop?.exec?.command ?? [];
  return cmd[0] === 'sleep' ? Number(cmd[1]) : 0;
}

describe('deploy/kubernetes: the manifests', () => {
  it('every file parses, and every object has apiVersion, kind and a name', () => {
    expect(manifests.length).toBeGreaterThanOrEqual(7);
    // kustomization.yaml is kustomize's own file, not an object sent to the cluster: no metadata.
    for (const m of manifests.filter((x) => x.kind !== 'Kustomization')) {
      expect(typeof m.apiVersion, m.file).toBe('string');
      expect(typeof m.kind, m.file).toBe('string');
      expect(m.metadata.name, m.file).toMatch(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/);
    }
  });

  it('kustomization.yaml names every other manifest file', () => {
    const k = one('Kustomization') as Manifest & { resources: string[] };
    expect([...k.resources].sort()).toEqual(files.filter((f) => f !== 'kustomization.yaml').sort());
  });
});

describe('deploy/kubernetes: the Deployment', () => {
  it('runs Portcullis beside a sample upstream in one pod, the config from the ConfigMap', () => {
    expect(pod.containers.map((c) => c.name).sort()).toEqual(['app', 'portcullis']);
    expect(gateway.args?.slice(0, 2)).toEqual(['start', '--config']);
    expect(volumeOf(gateway, configPath).volume.configMap).toBeDefined();
    // The sample upstream is deploy/docker/sample-upstream.mjs, verbatim (one source for both).
    const script = app.command?.[1] ?? '';
    expect(app.command?.[0]).toBe('node');
    const { volume, rest } = volumeOf(app, script);
    const cm = one('ConfigMap', volume.configMap?.name) as Manifest & { data: Record<string, string> };
    expect(cm.data[rest]).toBe(readFileSync('deploy/docker/sample-upstream.mjs', 'utf8'));
    expect(app.image).toMatch(/^node:24(?:[.-][\w.-]*)?$/);
  });

  it('certificates come from the Secret of the cert-manager Certificate, group-readable by the pod only', () => {
    const mounted = (gateway.volumeMounts ?? []).map((m) => pod.volumes.find((v) => v.name === m.name)!);
    const secrets = mounted.filter((v) => v.secret !== undefined);
    expect(secrets).toHaveLength(1);
    const secret = secrets[0]!.secret!;
    const cert = one('Certificate', 'portcullis-tls') as Manifest & {
      spec: {
        secretName: string;
        usages: string[];
        dnsNames: string[];
        issuerRef: { kind: string; name: string };
      };
    };
    expect(cert.apiVersion).toBe('cert-manager.io/v1');
    expect(secret.secretName).toBe(cert.spec.secretName);
    expect(cert.spec.usages).toContain('server auth');
    expect(one(cert.spec.issuerRef.kind, cert.spec.issuerRef.name).apiVersion).toBe('cert-manager.io/v1');
    // 0440 with fsGroup: the image's group reads the key; others do not.
    const mode = secret.defaultMode ?? 0o644;
    expect(mode & 0o040).toBe(0o040);
    expect(mode & 0o007).toBe(0);
    expect(pod.securityContext?.fsGroup).toBe(pod.securityContext?.runAsGroup);
    // Every mount is read-only.
    for (const c of pod.containers)
      for (const m of c.volumeMounts ?? []) expect(m.readOnly, `${c.name} ${m.name}`).toBe(true);
  });

  it('the server certificate names the Service', () => {
    const svc = one('Service');
    const cert = one('Certificate', 'portcullis-tls') as Manifest & { spec: { dnsNames: string[] } };
    expect(cert.spec.dnsNames).toContain(svc.metadata.name);
    expect(cert.spec.dnsNames).toContain(`${svc.metadata.name}.default.svc`);
  });

  it.each([
    ['startupProbe', '/healthz'],
    ['readinessProbe', '/readyz'],
    ['livenessProbe', '/healthz'],
  ] as const)('%s execs `portcullis probe --path %s` with the same config', (probe, path) => {
    const p = gateway[probe];
    const cmd = p?.exec?.command ?? [];
    expect(cmd.slice(0, 3)).toEqual(['node', '/app/dist/src/main.js', 'probe']);
    expect(cmd[cmd.indexOf('--config') + 1]).toBe(configPath);
    expect(cmd[cmd.indexOf('--path') + 1]).toBe(path);
    expect(p?.timeoutSeconds).toBeGreaterThan(0);
    expect(p?.periodSeconds).toBeGreaterThan(0);
  });

  it('preStop then drain: the grace period covers both, and the app outlives the drain', () => {
    const config = loadEmbedded();
    const drainS = config.timeouts.shutdownGraceMs / 1000;
    const gatewaySleep = preStopSleep(gateway);
    expect(gatewaySleep).toBeGreaterThan(0);
    expect(config.workers).toBe(1); // a cluster primary would add up to 5 s (primary.ts stopTimeoutMs)
    expect(pod.terminationGracePeriodSeconds).toBeGreaterThan(gatewaySleep + drainS + SHUTDOWN_FLUSH_S);
    // The upstream gets its SIGTERM only after the gateway has drained.
    expect(preStopSleep(app)).toBeGreaterThanOrEqual(gatewaySleep + drainS);
    expect(pod.terminationGracePeriodSeconds).toBeGreaterThan(preStopSleep(app));
    // The drain is the config's, not a default someone forgot.
    expect(config.timeouts.shutdownGraceMs).not.toBe(DEFAULTS.timeouts.shutdownGraceMs);
  });

  it('non-root, read-only root filesystem, no privilege escalation, no capabilities, no API token', () => {
    expect(pod.securityContext?.runAsNonRoot).toBe(true);
    expect(pod.securityContext?.runAsUser).toBeGreaterThan(0);
    expect(pod.automountServiceAccountToken).toBe(false);
    for (const c of pod.containers) {
      expect(c.securityContext?.readOnlyRootFilesystem, c.name).toBe(true);
      expect(c.securityContext?.allowPrivilegeEscalation, c.name).toBe(false);
      expect(c.securityContext?.capabilities?.drop, c.name).toEqual(['ALL']);
      expect(c.securityContext?.capabilities?.add, c.name).toBeUndefined();
    }
  });

  it('every container requests CPU and memory, and has a memory limit', () => {
    for (const c of pod.containers) {
      expect(c.resources?.requests?.cpu, c.name).toMatch(/^\d+m?$/);
      expect(c.resources?.requests?.memory, c.name).toMatch(/^\d+(Mi|Gi)$/);
      expect(c.resources?.limits?.memory, c.name).toMatch(/^\d+(Mi|Gi)$/);
    }
  });

  it('the Service selects the pod and targets the gateway’s listener port, never the app', () => {
    const svc = one('Service') as Manifest & {
      spec: { selector: Record<string, string>; ports: { port: number; targetPort: string | number }[] };
    };
    expect(deployment.spec.template.metadata.labels).toMatchObject(svc.spec.selector);
    expect(deployment.spec.selector.matchLabels).toEqual(svc.spec.selector);
    expect(svc.spec.ports).toHaveLength(1);
    const target = svc.spec.ports[0]!.targetPort;
    const port = gateway.ports?.find((p) => p.name === target || p.containerPort === target);
    expect(port).toBeDefined();
    const listener = loadEmbedded().listeners[0]!;
    expect(port!.containerPort).toBe(listener.address.port);
    expect(app.ports).toBeUndefined();
  });
});

// ---------------------------------------------------------------------------------------------------------
// The ConfigMap's config, through the real loader, with cert-manager-shaped files at the mounted paths

let dir: string;
/** mountPath of the Secret volume → the temp folder holding tls.crt, tls.key and ca.crt. */
let secretMount: string;

function openssl(args: readonly string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
}

/** The embedded config with the Secret's mountPath rewritten to the temp folder, through the loader. */
function loadEmbedded(): RuntimeConfig {
  const text = embeddedConfig().replaceAll(`${secretMount}/`, `${join(dir, 'tls')}/`);
  return loadConfigText(text, join(dir, 'config', basename(configPath)));
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'portcullis-k8s-'));
  await mkdir(join(dir, 'tls'));
  await mkdir(join(dir, 'config'));
  const secretVolume = pod.volumes.find((v) => v.secret !== undefined)!;
  secretMount = gateway.volumeMounts!.find((m) => m.name === secretVolume.name)!.mountPath;
  // What cert-manager writes for certificate.yaml: an ECDSA P-256 key in PKCS#8 (tls.key), the leaf
  // (tls.crt), and the CA Issuer's certificate (ca.crt).
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  openssl([
    'req',
    '-x509',
    ...ec,
    '-keyout',
    'ca.key',
    '-out',
    'tls/ca.crt',
    '-days',
    '30',
    '-subj',
    '/CN=Test CA',
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  openssl(['req', '-new', ...ec, '-keyout', 'tls/tls.key', '-out', 'server.csr', '-subj', '/CN=sample-app']);
  await writeFile(
    join(dir, 'ext.cnf'),
    'subjectAltName=DNS:sample-app,DNS:sample-app.default.svc\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n',
  );
  openssl([
    'x509',
    '-req',
    '-in',
    'server.csr',
    '-CA',
    'tls/ca.crt',
    '-CAkey',
    'ca.key',
    '-CAcreateserial',
    '-days',
    '30',
    '-extfile',
    'ext.cnf',
    '-out',
    'tls/tls.crt',
  ]);
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('deploy/kubernetes: the ConfigMap’s portcullis.yaml', () => {
  it('passes the real config loader with the Secret’s files at the mounted paths', () => {
    const config = loadEmbedded();
    const named = Object.keys(config.files).map((f) => basename(f));
    // Only the keys a cert-manager Secret has.
    expect(named.sort()).toEqual(['ca.crt', 'tls.crt', 'tls.key']);
    expect(config.listeners[0]?.protocol).toBe('http');
  });

  it('fails the loader when the Secret is not where the config looks (the check above can fail)', () => {
    const text = embeddedConfig().replaceAll(`${secretMount}/`, `${join(dir, 'missing')}/`);
    expect(() => loadConfigText(text, join(dir, 'config', basename(configPath)))).toThrow(
      /listeners\[0\]\.tls\.cert[\s\S]*listeners\[0\]\.tls\.clientCa/,
    );
  });

  it('listens on every interface of the pod, the admin on loopback, the upstream on loopback', () => {
    const config = loadEmbedded();
    const l = config.listeners[0]!;
    expect(l.address.host).toBe('0.0.0.0');
    expect(config.admin.enabled).toBe(true);
    expect(config.admin.address.host).toBe('127.0.0.1');
    expect(config.requireEncryption).toBe(true);
    const text = embeddedConfig();
    expect(text).toMatch(/upstream: http:\/\/127\.0\.0\.1:8080\b/);
  });
});
