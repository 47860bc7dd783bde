# syntax=docker/dockerfile:1
# Portcullis container image: build with the full toolchain, run with production dependencies only.
#
#   docker build -t portcullis .
#   docker run --rm -p 8443:8443 -v "$PWD/deploy:/etc/portcullis:ro" portcullis
#
# The image holds no configuration, certificate or key: mount them at /etc/portcullis (the config's
# relative paths resolve against its own folder, so `cert: certs/server.pem` finds
# /etc/portcullis/certs/server.pem). `portcullis certs init` makes a development PKI to mount.

# ---- build: compile TypeScript to dist/ ----------------------------------------------------------------
FROM node:20-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
# --ignore-scripts: no dependency runs install hooks in the build either.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# ---- runtime: production dependencies, the compiled code, the embedded default config ----------------
FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force
COPY --from=build /src/dist/src ./dist/src
# config/ holds the embedded default (`portcullis start` without --config); it names no secret.
COPY config ./config
RUN mkdir -p /etc/portcullis && chown 1000:1000 /etc/portcullis
# The `node` user of the official image, by number so that runAsNonRoot can verify it.
USER 1000:1000
VOLUME ["/etc/portcullis"]
# 8443: the data listener of a typical config. The admin listener (/metrics) stays on loopback unless
# the mounted config says otherwise.
EXPOSE 8443
# SIGTERM drains in-flight requests, then exits 0 (main.ts installs the handler; node runs as PID 1).
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "/app/dist/src/main.js"]
CMD ["start", "--config", "/etc/portcullis/portcullis.yaml"]
