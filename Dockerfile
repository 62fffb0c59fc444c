# syntax=docker/dockerfile:1
# relayhub: multi-stage image. Build with `docker build -t relayhub .`;
# default command runs a hub instance (`relayhub serve`). Override the command for
# `worker` / `migrate`, e.g. `docker run relayhub node dist/cli/main.js worker`.

ARG NODE_IMAGE=node:20-slim

# ---- build: install all deps, compile TypeScript, then drop dev deps ----
FROM ${NODE_IMAGE} AS build
WORKDIR /app
ENV CI=true
COPY package.json package-lock.json ./
# note: --ignore-scripts: the package's prepare script builds, and the sources are not copied yet
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY . .
RUN npm run build \
 && npm prune --omit=dev --no-audit --no-fund \
 && mkdir -p migrations

# ---- runtime: only production deps + compiled output, as a non-root user ----
FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production \
    PORT=3000
WORKDIR /app
COPY --from=build --chown=node:node /app/package.json /app/package-lock.json ./
COPY --from=build --chown=node:node /app/node_modules ./node_modules
COPY --from=build --chown=node:node /app/dist ./dist
COPY --from=build --chown=node:node /app/migrations ./migrations
COPY --from=build --chown=node:node /app/public ./public
# the official node image ships an unprivileged `node` user (uid 1000)
USER node
EXPOSE 3000
# GET /healthz answers 200 JSON; node:20-slim has no curl, so probe with node's fetch.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||3000)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
CMD ["node", "dist/cli/main.js", "serve"]
