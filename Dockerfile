# syntax=docker/dockerfile:1
# Basalt server image: dependencies resolved in a build stage, run as a non-root user.

FROM node:20-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
COPY client-sdk/package.json client-sdk/package.json
# Production dependencies only; argon2, esbuild and the embedded Postgres ship prebuilt binaries.
RUN npm ci --omit=dev --no-audit --no-fund

# The admin dashboard's static files, built with the dev dependencies (Vite), which the
# runtime image does not carry.
FROM node:20-bookworm-slim AS dashboard
WORKDIR /app
COPY package.json package-lock.json tsconfig.json ./
COPY client-sdk/package.json client-sdk/package.json
RUN npm ci --no-audit --no-fund
COPY dashboard ./dashboard
COPY scripts/dashboard-build.ts scripts/dashboard-build.ts
RUN node --import tsx scripts/dashboard-build.ts

FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=8080 \
    BASALT_DATA_DIR=/data \
    BASALT_FUNCTIONS_DIR=/app/functions
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json package-lock.json tsconfig.json ./
COPY client-sdk ./client-sdk
COPY server ./server
COPY migrations ./migrations
COPY functions ./functions
COPY --from=dashboard /app/dashboard/dist ./dashboard/dist
RUN mkdir -p /data && chown node:node /data
USER node
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=5 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 8080) + '/readyz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# node is PID 1's child via exec form, so SIGTERM from the runtime reaches Basalt directly.
# The heap floor is the one `npm start` sets (see docs/operations.md, "Node's heap floor").
CMD ["node", "--initial-old-space-size=128", "--import", "tsx", "server/main.ts"]
