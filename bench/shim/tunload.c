/*
 * tunload: the load generator and the upstream of the bench's TCP tunnel rows (bench/lib/tunnel.mjs).
 *
 * One binary, two roles, so that every tunnel row (Portcullis, stunnel, HAProxy, bare Node) is driven by
 * the same client and feeds the same upstream, and neither costs more CPU than the C it is written in:
 *
 *   tunload serve PORT
 *       The upstream: plain TCP on 127.0.0.1:PORT (0: any), one thread per connection, TCP_NODELAY.
 *       Prints {"msg":"listening","port":N}. Every connection starts with a 32-byte text header from the
 *       client, "<mode> <n>\n" padded with spaces:
 *         U n  read n bytes and discard them, then answer one byte "K" (the upload is complete when the
 *              upstream has every byte, not when the client's kernel took them)
 *         D n  write n bytes (1 MiB writes from one buffer), then close
 *         P n  echo: read 64 bytes, write them back, n times (or until the client closes)
 *
 *   tunload run HOST PORT MODE SIZE CONNS SECONDS CERT KEY CA CIPHERSUITE
 *       The client: CONNS threads, each one TLS 1.3 connection (only CIPHERSUITE offered, so every server
 *       negotiates the same one), presenting CERT/KEY and verifying the server against CA. All handshakes
 *       finish before the clock starts (a barrier); then each thread:
 *         up    writes SIZE bytes in 1 MiB SSL_write calls and waits for the upstream's "K"
 *         down  reads SIZE bytes
 *         ping  sends 64 bytes and waits for their echo, SIZE times or until SECONDS have passed;
 *               the round-trip time of every message is kept (p50/p99)
 *       SECONDS is a hard bound for every mode: a transfer not done by then counts as an error.
 *       CERT "-" presents no certificate (the bench's "mTLS is required" check: it must get nothing back).
 *       Prints one JSON line: {"mode":..,"conns":N,"bytes":B,"seconds":S,"messages":M,"p50_us":..,
 *       "p99_us":..,"cipher":"TLS_AES_128_GCM_SHA256","version":"TLSv1.3","errors":E,"error":"..."}
 *       where seconds is the wall time from the barrier to the last thread's end and bytes the payload
 *       bytes moved (header and ack not counted).
 *
 * Build:  gcc -O2 -o tunload tunload.c -lssl -lcrypto -lpthread
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#define HEADER 32
#define CHUNK (1 << 20)
#define PING 64
/** Round-trip samples kept per thread; past this, messages are counted but not sampled. */
#define MAX_SAMPLES 2000000

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* ------------------------------------------------------------------------------------------------------ */
/* serve */

static int read_full(int fd, char *buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, buf + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    got += (size_t)r;
  }
  return 0;
}

static int write_full(int fd, const char *buf, size_t n) {
  size_t put = 0;
  while (put < n) {
    ssize_t w = write(fd, buf + put, n - put);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    put += (size_t)w;
  }
  return 0;
}

static char *source_buf;

static void *serve_one(void *arg) {
  int fd = (int)(long)arg;
  char header[HEADER + 1] = {0};
  if (read_full(fd, header, HEADER) != 0) goto out;
  char mode = header[0];
  long long n = atoll(header + 2);
  if (mode == 'U') {
    char *buf = malloc(CHUNK);
    long long left = n;
    while (left > 0) {
      ssize_t r = read(fd, buf, left < CHUNK ? (size_t)left : CHUNK);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) break;
      left -= r;
    }
    free(buf);
    if (left == 0) (void)write_full(fd, "K", 1);
  } else if (mode == 'D') {
    long long left = n;
    while (left > 0) {
      size_t len = left < CHUNK ? (size_t)left : CHUNK;
      if (write_full(fd, source_buf, len) != 0) break;
      left -= (long long)len;
    }
  } else if (mode == 'P') {
    char buf[PING];
    for (long long i = 0; i < n; i++) {
      if (read_full(fd, buf, PING) != 0) break;
      if (write_full(fd, buf, PING) != 0) break;
    }
  }
out:
  // Let the client read everything before the FIN (a shutdown, not an abortive close).
  shutdown(fd, SHUT_WR);
  {
    char sink[4096];
    struct timeval tv = {2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    while (read(fd, sink, sizeof sink) > 0) {
    }
  }
  close(fd);
  return NULL;
}

static int serve(int port) {
  source_buf = malloc(CHUNK);
  memset(source_buf, 'x', CHUNK);
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_port = htons((unsigned short)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(lfd, 4096) != 0) {
    perror("tunload serve: bind/listen");
    return 1;
  }
  socklen_t len = sizeof a;
  getsockname(lfd, (struct sockaddr *)&a, &len);
  printf("{\"msg\":\"listening\",\"port\":%d}\n", ntohs(a.sin_port));
  fflush(stdout);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 256 * 1024);
  for (;;) {
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE) continue;
      perror("tunload serve: accept");
      return 1;
    }
    nodelay(fd);
    pthread_t t;
    if (pthread_create(&t, &attr, serve_one, (void *)(long)fd) != 0) close(fd);
  }
}

/* ------------------------------------------------------------------------------------------------------ */
/* run */

static SSL_CTX *ctx;
static struct sockaddr_in addr;
static char mode[8];
static long long size;
static double seconds_bound;
static double deadline;
static pthread_barrier_t barrier;

struct worker {
  pthread_t tid;
  SSL *ssl;
  int fd;
  long long bytes;
  long long messages;
  long nsamples;
  float *samples_us;
  double end;
  char error[160];
  char cipher[64];
  char version[16];
};

static void set_error(struct worker *w, const char *what, SSL *ssl, int ret) {
  if (w->error[0] != 0) return;
  unsigned long e = ERR_peek_last_error();
  int code = ssl != NULL ? SSL_get_error(ssl, ret) : 0;
  snprintf(w->error, sizeof w->error, "%s (ssl error %d, %s, errno %d)", what, code,
           e != 0 ? ERR_reason_error_string(e) : "-", errno);
  for (char *p = w->error; *p; p++)
    if (*p == '"' || *p == '\\') *p = '\'';
}

static int connect_tls(struct worker *w) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  nodelay(fd);
  // The deadline bounds every blocking call: a stuck server cannot hang the bench.
  struct timeval tv = {(time_t)seconds_bound + 5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  w->fd = fd;
  if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
    set_error(w, "connect", NULL, 0);
    return -1;
  }
  w->ssl = SSL_new(ctx);
  SSL_set_fd(w->ssl, fd);
  int r = SSL_connect(w->ssl);
  if (r != 1) {
    set_error(w, "handshake", w->ssl, r);
    return -1;
  }
  snprintf(w->cipher, sizeof w->cipher, "%s", SSL_get_cipher_name(w->ssl));
  snprintf(w->version, sizeof w->version, "%s", SSL_get_version(w->ssl));
  return 0;
}

static int ssl_write_full(struct worker *w, const char *buf, int n) {
  int r = SSL_write(w->ssl, buf, n);
  if (r != n) {
    set_error(w, "write", w->ssl, r);
    return -1;
  }
  return 0;
}

static int ssl_read_full(struct worker *w, char *buf, int n) {
  int got = 0;
  while (got < n) {
    int r = SSL_read(w->ssl, buf + got, n - got);
    if (r <= 0) {
      set_error(w, "read", w->ssl, r);
      return -1;
    }
    got += r;
  }
  return 0;
}

static int cmp_float(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

static void *run_one(void *arg) {
  struct worker *w = arg;
  int ok = connect_tls(w) == 0;
  char header[HEADER + 1];
  char m = mode[0] == 'u' ? 'U' : mode[0] == 'd' ? 'D' : 'P';
  snprintf(header, sizeof header, "%c %lld", m, size);
  size_t hl = strlen(header);
  memset(header + hl, ' ', HEADER - hl);
  header[HEADER - 1] = '\n';
  // Everyone starts together, connected or not (a failed thread then does nothing).
  pthread_barrier_wait(&barrier);
  if (!ok) {
    w->end = now_s();
    return NULL;
  }
  if (ssl_write_full(w, header, HEADER) != 0) goto done;
  if (m == 'U') {
    static char zeros[CHUNK];
    long long left = size;
    while (left > 0) {
      int len = left < CHUNK ? (int)left : CHUNK;
      if (ssl_write_full(w, zeros, len) != 0) goto done;
      left -= len;
      w->bytes += len;
      if (now_s() > deadline) {
        set_error(w, "time bound reached", NULL, 0);
        goto done;
      }
    }
    char k;
    if (ssl_read_full(w, &k, 1) != 0) goto done;
    if (k != 'K') set_error(w, "bad ack", NULL, 0);
  } else if (m == 'D') {
    char *buf = malloc(CHUNK);
    long long left = size;
    while (left > 0) {
      int r = SSL_read(w->ssl, buf, left < CHUNK ? (int)left : CHUNK);
      if (r <= 0) {
        set_error(w, "read", w->ssl, r);
        break;
      }
      left -= r;
      w->bytes += r;
      if ((w->bytes & ((1 << 24) - 1)) < r && now_s() > deadline) {
        set_error(w, "time bound reached", NULL, 0);
        break;
      }
    }
    free(buf);
  } else {
    char out[PING], in[PING];
    memset(out, 'p', sizeof out);
    w->samples_us = malloc(sizeof(float) * MAX_SAMPLES);
    for (long long i = 0; i < size; i++) {
      double t0 = now_s();
      if (t0 > deadline) break;
      if (ssl_write_full(w, out, PING) != 0) break;
      if (ssl_read_full(w, in, PING) != 0) break;
      double dt = now_s() - t0;
      if (w->nsamples < MAX_SAMPLES) w->samples_us[w->nsamples++] = (float)(dt * 1e6);
      w->messages++;
      w->bytes += 2 * PING;
    }
  }
done:
  w->end = now_s();
  return NULL;
}

static int run(int argc, char **argv) {
  if (argc != 12) {
    fprintf(stderr, "usage: tunload run HOST PORT up|down|ping SIZE CONNS SECONDS CERT|- KEY CA CIPHERSUITE\n");
    return 2;
  }
  addr.sin_family = AF_INET;
  addr.sin_port = htons((unsigned short)atoi(argv[3]));
  if (inet_pton(AF_INET, argv[2], &addr.sin_addr) != 1) {
    fprintf(stderr, "tunload: bad host %s\n", argv[2]);
    return 2;
  }
  snprintf(mode, sizeof mode, "%s", argv[4]);
  size = atoll(argv[5]);
  int conns = atoi(argv[6]);
  seconds_bound = atof(argv[7]);
  const char *cert = argv[8], *key = argv[9], *ca = argv[10], *suite = argv[11];
  if (conns < 1 || conns > 1000 || size < 1 || seconds_bound <= 0) {
    fprintf(stderr, "tunload: bad numbers\n");
    return 2;
  }

  ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
  if (SSL_CTX_set_ciphersuites(ctx, suite) != 1) {
    fprintf(stderr, "tunload: bad ciphersuite %s\n", suite);
    return 2;
  }
  if (strcmp(cert, "-") != 0 &&
      (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 || SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)) {
    fprintf(stderr, "tunload: cannot load %s / %s\n", cert, key);
    return 2;
  }
  if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) {
    fprintf(stderr, "tunload: cannot load CA %s\n", ca);
    return 2;
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
  // One session per connection; nothing cached between connections (every row does full handshakes).
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);

  struct worker *ws = calloc((size_t)conns, sizeof *ws);
  pthread_barrier_init(&barrier, NULL, (unsigned)conns + 1);
  // Set before the threads start (they read it after the barrier); handshakes come out of the same bound.
  deadline = now_s() + seconds_bound;
  for (int i = 0; i < conns; i++) pthread_create(&ws[i].tid, NULL, run_one, &ws[i]);
  pthread_barrier_wait(&barrier);
  double t0 = now_s();
  double end = t0;
  long long bytes = 0, messages = 0;
  int errors = 0;
  const char *error = "";
  const char *cipher = "", *version = "";
  long total_samples = 0;
  for (int i = 0; i < conns; i++) {
    pthread_join(ws[i].tid, NULL);
    if (ws[i].end > end) end = ws[i].end;
    bytes += ws[i].bytes;
    messages += ws[i].messages;
    total_samples += ws[i].nsamples;
    if (ws[i].error[0] != 0) {
      errors++;
      if (error[0] == 0) error = ws[i].error;
    }
    if (cipher[0] == 0 && ws[i].cipher[0] != 0) {
      cipher = ws[i].cipher;
      version = ws[i].version;
    } else if (ws[i].cipher[0] != 0 && strcmp(cipher, ws[i].cipher) != 0) {
      cipher = "MIXED";
    }
  }
  double p50 = -1, p99 = -1;
  if (total_samples > 0) {
    float *all = malloc(sizeof(float) * (size_t)total_samples);
    long k = 0;
    for (int i = 0; i < conns; i++)
      for (long j = 0; j < ws[i].nsamples; j++) all[k++] = ws[i].samples_us[j];
    qsort(all, (size_t)total_samples, sizeof(float), cmp_float);
    p50 = all[(long)(0.50 * (double)(total_samples - 1))];
    p99 = all[(long)(0.99 * (double)(total_samples - 1))];
  }
  printf("{\"mode\":\"%s\",\"conns\":%d,\"bytes\":%lld,\"seconds\":%.6f,\"messages\":%lld,\"p50_us\":%.1f,"
         "\"p99_us\":%.1f,\"cipher\":\"%s\",\"version\":\"%s\",\"errors\":%d,\"error\":\"%s\"}\n",
         mode, conns, bytes, end - t0, messages, p50, p99, cipher, version, errors, error);
  return 0;
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  if (argc >= 3 && strcmp(argv[1], "serve") == 0) return serve(atoi(argv[2]));
  if (argc >= 2 && strcmp(argv[1], "run") == 0) return run(argc, argv);
  fprintf(stderr, "usage: tunload serve PORT | tunload run HOST PORT MODE SIZE CONNS SECONDS CERT KEY CA SUITE\n");
  return 2;
}
