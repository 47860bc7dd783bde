# syntax=docker/dockerfile:1
# Portcullis container image: build with the full toolchain, run with production dependencies only.
#
#   docker build -t portcullis .
#
# The image holds no configuration, certificate or key: mount them at /etc/portcullis (the config's
# relative paths resolve against its own folder, so `cert: certs/server.pem` finds
# /etc/portcullis/certs/server.pem). deploy/docker/ is such a folder: a config that listens on
# 0.0.0.0:8443 with the admin on loopback, certs/ made by `certs init`, and compose.yaml running the image
# as a sidecar of a sample service; the README's "Deploy > Docker" gives the `docker run` lines.

# ---- build: compile TypeScript to dist/ ----------------------------------------------------------------
FROM node:24-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
# --ignore-scripts: no dependency runs install hooks in the build either.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# ---- runtime: production dependencies, the compiled code, the embedded default config ----------------
FROM node:24-bookworm-slim AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force
COPY --from=build /src/dist/src ./dist/src
# config/ holds the embedded default (`portcullis start` without --config); it names no secret.
COPY config ./config
RUN mkdir -p /etc/portcullis && chown 1000:1000 /etc/portcullis
# The `node` user of the official image, by number so that runAsNonRoot can verify it. The mounted keys
# must be readable by the uid the container runs as: `docker run --user "$(id -u):$(id -g)"` for keys
# that are yours and 0600 (what `certs init` writes), or chown them to 1000; Kubernetes: fsGroup 1000 and
# a Secret defaultMode of 0440.
USER 1000:1000
VOLUME ["/etc/portcullis"]
# 8443: the data listener of deploy/docker/portcullis.yaml. The admin listener (/metrics, /readyz) stays
# on loopback inside the container: the HEALTHCHECK runs inside it.
EXPOSE 8443
# `portcullis probe` reads the admin address (and TLS settings) from the same config as CMD, GETs /readyz
# and exits 0 on 200, 1 otherwise. A container started with another --config needs --health-cmd to match.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["node", "/app/dist/src/main.js", "probe", "--config", "/etc/portcullis/portcullis.yaml", "--path", "/readyz"]
# SIGTERM drains in-flight requests for timeouts.shutdownGraceMs, then exits 0 (main.ts installs the
# handler; node runs as PID 1). Give `docker stop` more than that: --stop-timeout 20 for the default 10 s.
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "/app/dist/src/main.js"]
CMD ["start", "--config", "/etc/portcullis/portcullis.yaml"]
