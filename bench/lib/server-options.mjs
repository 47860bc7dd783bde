// The TLS server options every Node server of the bench uses: the same construction as Portcullis's own
// listeners (http2.createSecureServer with allowHTTP1, client certificate required, TLS 1.2 floor), so the
// reference rows differ from Portcullis in what they do per request, not in how they accept.
import { readFileSync } from 'node:fs';

/** Options for `http2.createSecureServer` from `{ cert, key, ca }` file paths. */
export function secureServerOptions(cfg) {
  return {
    cert: readFileSync(cfg.cert),
    key: readFileSync(cfg.key),
    ca: readFileSync(cfg.ca),
    requestCert: true,
    rejectUnauthorized: true,
    allowHTTP1: true,
    ALPNProtocols: ['h2', 'http/1.1'],
    minVersion: 'TLSv1.2',
  };
}
