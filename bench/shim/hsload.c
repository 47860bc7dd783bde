/*
 * hsload: a full-handshake load generator for the bench's "full handshakes/s" rows.
 *
 * Why not wrk with `Connection: close`: wrk waits for a TLS handshake by keeping the socket registered
 * for writability and retrying SSL_connect, so while the server computes its part of a handshake wrk
 * spins (measured here: 3.3 ms of wrk CPU per handshake against a slow server, 1.0 ms against a fast
 * one). On two shared cores that spin takes CPU from the server in proportion to how slow the server
 * is, which exaggerates every gap. hsload uses blocking sockets in N threads: a thread waiting for the
 * server sleeps.
 *
 * Each thread loops until the deadline: TCP connect, a full TLS handshake presenting the client
 * certificate (no session is ever offered, so no resumption), `GET / HTTP/1.1` with `Connection: close`,
 * read to the server's close, count the answer as ok when its status line says 200. Latency is from
 * connect() to the close, per connection.
 *
 * Build:  gcc -O2 -o hsload hsload.c -lssl -lcrypto -lpthread
 * Use:    hsload HOST PORT SECONDS THREADS CERT.pem KEY.pem
 * Prints one JSON line: {"connections":N,"ok":N,"errors":N,"seconds":S,"p50_ms":X,"p99_ms":Y}
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

/** Latencies kept per thread; past this, connections are still counted but not sampled. */
#define MAX_SAMPLES 2000000

static SSL_CTX *ctx;
static struct sockaddr_in addr;
static double deadline;
static char request[256];

struct worker {
  pthread_t tid;
  long connections, ok, errors;
  long nsamples;
  float *samples_ms;
};

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/** One connection: 1 when the answer was a 200, 0 when it was another answer, -1 on a failure. */
static int one(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  struct timeval tv = {5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  int one_ = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one_, sizeof one_);
  int result = -1;
  SSL *ssl = NULL;
  if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) goto out;
  ssl = SSL_new(ctx);
  if (ssl == NULL) goto out;
  SSL_set_fd(ssl, fd);
  if (SSL_connect(ssl) != 1) goto out;
  if (SSL_write(ssl, request, (int)strlen(request)) <= 0) goto out;
  char buf[4096];
  char head[16] = {0};
  size_t have = 0;
  for (;;) {
    int n = SSL_read(ssl, buf, sizeof buf);
    if (n <= 0) {
      int e = SSL_get_error(ssl, n);
      // The server's close (with or without close_notify) ends the answer.
      if (e == SSL_ERROR_ZERO_RETURN || e == SSL_ERROR_SYSCALL) break;
      goto out;
    }
    if (have < sizeof head - 1) {
      size_t take = sizeof head - 1 - have;
      if ((size_t)n < take) take = (size_t)n;
      memcpy(head + have, buf, take);
      have += take;
    }
  }
  result = (have >= 12 && (memcmp(head, "HTTP/1.1 200", 12) == 0 || memcmp(head, "HTTP/1.0 200", 12) == 0)) ? 1 : 0;
out:
  if (ssl != NULL) SSL_free(ssl);
  close(fd);
  ERR_clear_error();
  return result;
}

static void *run(void *arg) {
  struct worker *w = arg;
  while (now_s() < deadline) {
    double t0 = now_s();
    int r = one();
    double ms = (now_s() - t0) * 1000.0;
    w->connections++;
    if (r == 1) w->ok++;
    else w->errors++;
    if (w->nsamples < MAX_SAMPLES / 8) w->samples_ms[w->nsamples++] = (float)ms;
  }
  return NULL;
}

static int cmp(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  if (argc != 7) {
    fprintf(stderr, "usage: hsload HOST PORT SECONDS THREADS CERT.pem KEY.pem\n");
    return 2;
  }
  int seconds = atoi(argv[3]);
  int threads = atoi(argv[4]);
  if (seconds <= 0 || seconds > 600 || threads <= 0 || threads > 256) {
    fprintf(stderr, "hsload: SECONDS must be 1..600 and THREADS 1..256\n");
    return 2;
  }
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_port = htons((unsigned short)atoi(argv[2]));
  if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1) {
    fprintf(stderr, "hsload: HOST must be an IPv4 address\n");
    return 2;
  }
  snprintf(request, sizeof request, "GET / HTTP/1.1\r\nHost: %s:%s\r\nConnection: close\r\n\r\n", argv[1], argv[2]);
  ctx = SSL_CTX_new(TLS_client_method());
  // Every connection is a full handshake: no client-side session cache, no ticket ever offered.
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
  if (SSL_CTX_use_certificate_chain_file(ctx, argv[5]) != 1 || SSL_CTX_use_PrivateKey_file(ctx, argv[6], SSL_FILETYPE_PEM) != 1) {
    fprintf(stderr, "hsload: cannot load the client certificate or key\n");
    ERR_print_errors_fp(stderr);
    return 2;
  }
  struct worker *ws = calloc((size_t)threads, sizeof *ws);
  deadline = now_s() + seconds;
  double start = now_s();
  for (int i = 0; i < threads; i++) {
    ws[i].samples_ms = malloc(sizeof(float) * (MAX_SAMPLES / 8));
    pthread_create(&ws[i].tid, NULL, run, &ws[i]);
  }
  long conns = 0, ok = 0, errors = 0, n = 0;
  for (int i = 0; i < threads; i++) {
    pthread_join(ws[i].tid, NULL);
    conns += ws[i].connections;
    ok += ws[i].ok;
    errors += ws[i].errors;
    n += ws[i].nsamples;
  }
  double elapsed = now_s() - start;
  float *all = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
  long k = 0;
  for (int i = 0; i < threads; i++) {
    memcpy(all + k, ws[i].samples_ms, sizeof(float) * (size_t)ws[i].nsamples);
    k += ws[i].nsamples;
  }
  qsort(all, (size_t)n, sizeof(float), cmp);
  double p50 = n > 0 ? all[(long)(n * 0.5)] : -1;
  double p99 = n > 0 ? all[n * 99 / 100 < n ? n * 99 / 100 : n - 1] : -1;
  printf("{\"connections\":%ld,\"ok\":%ld,\"errors\":%ld,\"seconds\":%.3f,\"p50_ms\":%.3f,\"p99_ms\":%.3f}\n", conns, ok, errors, elapsed, p50, p99);
  return 0;
}
