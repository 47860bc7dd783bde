/*
 * LD_PRELOAD shim that makes TLS load generators (wrk, h2load) present a client certificate.
 *
 * Neither wrk nor h2load has an option for a client certificate, and a Node load generator would compete
 * with the proxy for the same two cores. So this wraps SSL_CTX_new: after the real one returns, it loads
 * BENCH_CLIENT_CERT (a PEM chain) and BENCH_CLIENT_KEY (a PEM private key) into the new context. Every
 * SSL created from that context then answers a CertificateRequest with that certificate.
 *
 * Build:  gcc -shared -fPIC -o shim.so shim.c -ldl -lssl
 * Use:    BENCH_CLIENT_CERT=client.pem BENCH_CLIENT_KEY=client-key.pem LD_PRELOAD=./shim.so wrk https://...
 *
 * Optional: BENCH_SHIM_VERBOSE=1 prints one line per context to stderr (to prove the shim was loaded).
 * A certificate or key that fails to load aborts the process: a benchmark that silently ran without the
 * certificate would measure handshake failures, not a proxy.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

typedef SSL_CTX *(*ssl_ctx_new_fn)(const SSL_METHOD *);

static void die(const char *what, const char *path) {
  fprintf(stderr, "bench shim: %s %s failed:\n", what, path);
  ERR_print_errors_fp(stderr);
  abort();
}

SSL_CTX *SSL_CTX_new(const SSL_METHOD *method) {
  static ssl_ctx_new_fn real = NULL;
  if (real == NULL) {
    real = (ssl_ctx_new_fn)dlsym(RTLD_NEXT, "SSL_CTX_new");
    if (real == NULL) {
      fprintf(stderr, "bench shim: dlsym(RTLD_NEXT, SSL_CTX_new) failed: %s\n", dlerror());
      abort();
    }
  }
  SSL_CTX *ctx = real(method);
  if (ctx == NULL) return NULL;

  const char *cert = getenv("BENCH_CLIENT_CERT");
  const char *key = getenv("BENCH_CLIENT_KEY");
  if (cert == NULL || key == NULL || *cert == '\0' || *key == '\0') return ctx; /* nothing asked for */

  if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) die("SSL_CTX_use_certificate_chain_file", cert);
  if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) die("SSL_CTX_use_PrivateKey_file", key);
  if (SSL_CTX_check_private_key(ctx) != 1) die("SSL_CTX_check_private_key", key);

  const char *verbose = getenv("BENCH_SHIM_VERBOSE");
  if (verbose != NULL && *verbose == '1') fprintf(stderr, "bench shim: client certificate %s loaded\n", cert);
  return ctx;
}
