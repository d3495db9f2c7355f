# syntax=docker/dockerfile:1
# Basalt server image: dependencies resolved in a build stage, run as a non-root user.

FROM node:20-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
COPY client-sdk/package.json client-sdk/package.json
# Production dependencies only; argon2, esbuild and the embedded Postgres ship prebuilt binaries.
RUN npm ci --omit=dev --no-audit --no-fund

# The build: the server compiled to JavaScript (dist/, esbuild) and the admin dashboard's
# static files (dashboard/dist, Vite). It needs the dev dependencies, which the runtime image
# does not carry; the runtime image runs only their output.
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json ./
COPY client-sdk/package.json client-sdk/package.json
RUN npm ci --no-audit --no-fund
COPY client-sdk/src ./client-sdk/src
COPY server ./server
COPY dashboard ./dashboard
COPY scripts/build.ts scripts/dashboard-build.ts ./scripts/
RUN node --import tsx scripts/build.ts

FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=8080 \
    BASALT_DATA_DIR=/data \
    BASALT_FUNCTIONS_DIR=/app/functions
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json package-lock.json ./
COPY client-sdk/package.json client-sdk/package.json
COPY migrations ./migrations
COPY functions ./functions
# The compiled server (main.mjs, the function worker's script, functions-api.mjs that
# functions import as basalt/functions); no TypeScript and no loader at run time.
COPY --from=build /app/dist ./dist
COPY --from=build /app/dashboard/dist ./dashboard/dist
RUN mkdir -p /data && chown node:node /data
USER node
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=5 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 8080) + '/readyz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# node is PID 1's child via exec form, so SIGTERM from the runtime reaches Basalt directly.
# The Node flags are the ones `npm start` sets (docs/operations.md, "Memory and CPU at rest").
CMD ["node", "--max-semi-space-size=2", "--initial-old-space-size=128", "dist/main.mjs"]
